"""Python source read as a syntax tree, for tests that check how the code is put together."""

from __future__ import annotations

import ast
import time
from pathlib import Path

_ATTEMPTS = 5


def parse_source(path: Path) -> ast.Module:
    """`ast.parse` of a file, tried again when CPython 3.11's AST constructor trips over a
    parse in another thread of the same process (cpython#106905: its recursion counter is
    shared, and Python 3.11 parses source lines to draw the carets of every traceback it
    formats, as a test server's thread logging an error does). That SystemError says nothing
    of the file; a second parse, alone, succeeds."""
    source = path.read_text()
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return ast.parse(source, filename=str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == _ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
