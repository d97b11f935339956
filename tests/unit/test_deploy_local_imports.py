"""Arrows point down in deploy/local: the command line sits on top and only `python -m
deploy.local` (__main__.py) imports it, so no module there imports the one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.source import parse_source

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"
CLI = "deploy.local.cli"


def imported_modules(source: Path) -> set[str]:
    """Every module `source` imports, at the top or inside a function or `if` block."""
    found: set[str] = set()
    for node in ast.walk(parse_source(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            # `from deploy.local import cli` names the module as an imported name.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_only_main_imports_the_local_command_line() -> None:
    importers = {path.name for path in sorted(LOCAL.glob("*.py")) if CLI in imported_modules(path)}

    assert importers == {"__main__.py"}
