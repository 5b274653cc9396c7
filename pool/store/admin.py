"""``greenjobs-admin``: ledger chores that need no running server.

``greenjobs-admin schema [--from VERSION]`` prints the SQL that creates (or, from VERSION, migrates)
the PostgreSQL ledger, for DBAs who apply schema changes themselves; a server started on a ledger
brought up to date this way finds nothing left to do.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="greenjobs-admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    schema = commands.add_parser("schema", help="print the PostgreSQL ledger's schema SQL")
    schema.add_argument("--from", dest="from_version", type=int, default=0,
                        help="the ledger's current version (SELECT version FROM greenjobs_schema); 0: a new ledger")
    args = parser.parse_args(argv)
    from greenjobs.pool.store.postgres import schema as postgres_schema
    if not 0 <= args.from_version <= postgres_schema.CURRENT:
        parser.error(f"--from must be 0..{postgres_schema.CURRENT}")
    sys.stdout.write(postgres_schema.script(args.from_version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
