"""The `sessionlib` command (`python -m sessionlib`): `sessionlib doctor` checks the
settings and the Redis topology they describe, as the middleware would see them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sessionlib import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionlib", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sessionlib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser(
        "doctor",
        help="print the resolved settings (secrets redacted) with their sources, and check "
        "sentinels or cluster nodes (state, slots, agreement), masters, replicas, WAIT "
        "durability, TLS, ACL rights and scripts; exit 1 on a problem",
    )
    doctor.add_argument("--profile", help="as load_settings(profile=...); else SESSIONLIB_PROFILE")
    doctor.add_argument(
        "--config-file", help="as load_settings(config_file=...); else SESSIONLIB_CONFIG_FILE"
    )
    args = parser.parse_args(argv)
    # Imported here so `--version` and `--help` work even when Redis libraries misbehave.
    from sessionlib.doctor import run

    return run(sys.stdout, profile=args.profile, config_file=args.config_file)


if __name__ == "__main__":
    sys.exit(main())
