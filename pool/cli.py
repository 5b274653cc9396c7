"""``greenjobs-worker``: run jobs outside the HTTP server.

``greenjobs-worker config.ini`` supervises cpu worker processes (``greenjobs.pool.cpu.worker``);
``greenjobs-worker --io config.ini`` runs io jobs in a gevent process that serves no HTTP
(``greenjobs.pool.io.worker``).  This module imports neither until it knows which: the io runner
must monkey-patch before socket or threading are imported, and a cpu worker must never be patched.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch on ``--io``; every other argument is the cpu worker command's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--io" in argv:
        import argparse
        parser = argparse.ArgumentParser(prog="greenjobs-worker --io",
                                         description="Run greenjobs io jobs in a process that serves no HTTP.")
        parser.add_argument("--io", action="store_true", required=True, help="run io jobs (this mode)")
        parser.add_argument("ini", help="the same config.ini the servers use (its [app:main] settings)")
        args = parser.parse_args(argv)
        from greenjobs.pool.io.worker import run
        return run(args.ini)
    from greenjobs.pool.cpu.worker import main as cpu_main
    return cpu_main(argv)


if __name__ == "__main__":
    sys.exit(main())
