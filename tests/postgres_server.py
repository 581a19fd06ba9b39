"""A real PostgreSQL server for the tests: a throwaway cluster on loopback, started by the tests.

It uses the Debian packages' binaries (``.ci/run`` installs them). PostgreSQL refuses to run
as root, so as root the cluster belongs to the ``postgres`` user and its commands run
through ``runuser``. Each test gets its own database; ``restart`` and ``stop`` give the
outage tests a real server going away.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


def find_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """``netns``: run the server in that network namespace (tests/netns.py), listening on
    ``listen``, with password logins from the network ``clients``; the tests then administer it
    over its Unix socket (``admin_url``)."""

    def __init__(
        self, netns: str | None = None, listen: str = "127.0.0.1", port: int | None = None, clients: str = ""
    ) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
        self._bin = bin_dir
        # Not under pytest's tmp_path: that is private to root, and the server may run as postgres.
        root = self._root = Path(tempfile.mkdtemp(prefix="aigc-image-pg-"))
        self.data = root / "data"
        self.port = port or _free_port()
        self._netns = netns
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '{listen}'\nport = {self.port}\nunix_socket_directories = '{root}'\n"
                "fsync = off\nmax_connections = 200\n"
            )
        if clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} scram-sha-256\n")
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        if self._netns:
            command = ["ip", "netns", "exec", self._netns, *command]
        subprocess.run(command, check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self._root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it still runs, and delete the cluster."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self._root, ignore_errors=True)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self._root / "log"), "-m", "fast", "-w", "restart")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        """The same server over its Unix socket, reachable from any network namespace."""
        return f"postgresql://postgres@/{database}?host={self._root}&port={self.port}"

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
