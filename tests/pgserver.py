"""A throwaway PostgreSQL server for the tests, from the machine's own binaries.

`initdb` a cluster in a temporary folder, start it on a free loopback port with
`pg_ctl`, hand out fresh databases, stop it and remove the folder at the end.
PostgreSQL refuses to run as root, so when the tests run as root (CI here does)
every binary runs as the `postgres` user via `runuser`, on folders that user owns.
Durability is switched off: the data dies with the test session anyway.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ports import free_port

USER = "postgres"
PASSWORD = "t3st-s3cret"  # a throwaway server; the tests check it is masked in error lines
TIMEOUT = 60
# A cluster in memory when the machine has a roomy tmpfs: creating databases and the WAL
# the tests write cost nothing on disk, and removing the folder at the end is instant.
# (A container's /dev/shm is often 64 MB: too small, so the disk is used then.)
MEMORY = Path("/dev/shm")
MEMORY_NEEDED = 2 * 1024**3


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: PATH first, then Debian's versioned folders, newest first."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                       key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versioned[-1]).parent if versioned else None




class PostgresServer:
    """One cluster: `start()`, `create_database()` as often as needed, `stop()`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        in_memory = (MEMORY.is_dir() and os.access(MEMORY, os.W_OK)
                     and shutil.disk_usage(MEMORY).free >= MEMORY_NEEDED)
        self.root = Path(tempfile.mkdtemp(prefix="monitor-pg-", dir=MEMORY if in_memory else None))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self._names = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.sockets.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            import pwd

            try:
                account = pwd.getpwnam(USER)
            except KeyError:
                raise RuntimeError(f"running as root, PostgreSQL needs a `{USER}` user to run as: "
                                   "install Debian's postgresql package or create the user") from None
            for path in (self.root, self.sockets, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        # Password auth on TCP (so the tests see a real password in the URL),
        # trust on the private socket folder.
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "-E", "UTF8",
                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        pwfile.unlink()
        last = ""
        for _ in range(3):  # the port may be taken between choosing and binding it
            self.port = free_port()
            options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                       "-c max_wal_size=256MB")
            proc = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                             "-w", "-t", str(TIMEOUT), "start", check=False)
            if proc.returncode == 0:
                return
            last = proc.stdout + proc.stderr + self.log_tail()
        raise RuntimeError(f"PostgreSQL did not start:\n{last}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- databases -----------------------------------------------------------

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            # FILE_COPY (15+) copies the template's files instead of writing them all to WAL.
            strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}"{strategy}')
        return self.url(name)

    def _run(self, binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / binary), *args]
        if self.as_root:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        # cwd: the postgres user may not be allowed into the caller's working directory.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=self.root,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{binary} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc
