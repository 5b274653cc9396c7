"""A private PostgreSQL cluster for fault tests: its own data folder, port and socket folder.

The shared server on 5432 is never touched.  ``initdb`` refuses to run as root, so the folder is
handed to the ``postgres`` user and the cluster runs as it (``runuser``).  ``stop("immediate")`` is a
crash (no checkpoint, clients cut), ``stop("fast")`` a clean shutdown; ``start()`` again reuses the data.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from tests.support import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)




class PgCluster:
    """``listen``: the address it binds (a test's own address on a namespace bridge, or loopback); clients
    of that address's /16 are trusted."""

    def __init__(self, folder: Path, listen: str = "127.0.0.1"):
        self.folder = folder
        self.data = folder / "pg"
        self.port = free_port()
        self.listen = listen
        self.url = f"postgresql://postgres@{listen}:{self.port}/postgres"

    @staticmethod
    def available() -> bool:
        return _bin("initdb") is not None and _bin("pg_ctl") is not None and shutil.which("runuser") is not None

    def _as_postgres(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> "PgCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o700)
        self._as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        if self.listen != "127.0.0.1":
            net = ".".join(self.listen.split(".")[:2]) + ".0.0/16"
            with open(self.data / "pg_hba.conf", "a") as fh:
                fh.write(f"host all all {net} trust\n")
        return self.start()

    def start(self) -> "PgCluster":
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-o",
                          f"-p {self.port} -k {self.folder} -c listen_addresses={self.listen} -c fsync=on",
                          "-l", str(self.folder / "log"), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass                                    # not running
        shutil.rmtree(self.folder, ignore_errors=True)
