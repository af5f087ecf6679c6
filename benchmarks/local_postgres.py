"""A throwaway PostgreSQL server with pgvector for tests and benchmarks: initdb in a fresh folder, unix socket only.

The server is Debian's PostgreSQL with pgvector built from Debian's source package
(``tests/install-pgvector.sh``, run by ``make test``). As root it runs as ``nobody``: PostgreSQL refuses
to run as root. It listens on no TCP address at all (``listen_addresses = ''``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "facegraph"


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL whose share folder has the pgvector extension."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        version = Path(bindir).parent.name
        if Path(f"/usr/share/postgresql/{version}/extension/vector.control").exists():
            return Path(bindir)
    return None


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.dsn`` — a fresh cluster on a unix socket, stopped and deleted after."""

    def __init__(self, settings: dict[str, str] | None = None, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL with pgvector under /usr/lib/postgresql: run `make test` (as root) to install it")
        # Short: a unix socket's path is limited to about 100 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="fg-pg-"))
        self.data = self.folder / "data"
        self.settings = {"listen_addresses": "''", "unix_socket_directories": f"'{self.folder}'", "fsync": "off", **(settings or {})}
        as_root = os.geteuid() == 0
        self._user = {"user": "nobody", "group": "nogroup"} if as_root else {}
        if as_root:
            shutil.chown(self.folder, "nobody", "nogroup")

    @property
    def dsn(self) -> str:
        return f"host={self.folder} user={USER} dbname=postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bindir / args[0]), *args[1:]], check=True, capture_output=True, **self._user)

    def start(self) -> "LocalPostgres":
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-w", "-s", "-l", str(self.folder / "server.log"), "-o", options, "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-s", "-m", "fast", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
