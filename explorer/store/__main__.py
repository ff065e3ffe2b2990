"""Schema chores from the command line, without running a sweep.

    python -m explorer.store upgrade RUNS_DIR_OR_URL   # what a writer does when it opens
    python -m explorer.store revision -m "epochs.grad_norm"   # the next revision file
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from explorer.store.errors import StoreError
from explorer.store.writer import Writer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.store", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="upgrade a results database in place")
    upgrade.add_argument("target", help="runs directory, database file or SQLAlchemy URL")
    revision = commands.add_parser(
        "revision", help="write the next revision, from the schema module's tables")
    revision.add_argument("-m", "--message", required=True, help="what the revision does")
    args = parser.parse_args(argv)
    if args.command == "revision":
        from explorer.store.migrate import new_revision

        print(new_revision(args.message))
        return 0
    try:
        with Writer.open(args.target) as writer:
            print(f"{writer.where}: schema version {writer.schema_version()}")
    except StoreError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
