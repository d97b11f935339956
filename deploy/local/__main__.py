"""`python -m deploy.local <command>`: the local topology's command line (deploy/local/cli.py).
The one module that imports the CLI, so nothing below it ever imports back up."""

from __future__ import annotations

import sys

from deploy.local.cli import main

if __name__ == "__main__":
    sys.exit(main())
