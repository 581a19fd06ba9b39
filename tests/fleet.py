"""The several-hosts deployment of docs/operations.md, started for real: one PostgreSQL, two
``aigc-image serve --no-worker`` behind a balancer, two ``aigc-image worker``.

On ``Network`` (tests/netns.py) each process runs on a host of its own:

    front 10.201.1.0/24   client .100 ── lb .10 ── api1 .11, api2 .12
    back  10.201.2.0/24   api1 .11, api2 .12 ── db .2 ── w1 .21, w2 .22

Clients reach only the balancer and the API processes; the API processes and the workers reach
PostgreSQL over the back network. The hosts share one data directory (the ``local`` result
backend on a shared file system, as NFS would be): workers write the images, and either API
process serves them under the one ``public_url``, the balancer's. Only the API processes get the
keys. Inside these private namespaces the services use their usual fixed ports.

On ``Loopback`` the same processes run on 127.0.0.1 with free ports: the baseline of
bench/fleet.py.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg

from tests.helpers import OTHER_ID, OTHER_KEY, ROOT, SECRET_ID, SECRET_KEY, server_env, wait_for
from tests.netns import Network
from tests.postgres_server import PostgresServer

FRONT, BACK = "front", "back"
ADDRESSES = {
    "client": {FRONT: "10.201.1.100"},
    "lb": {FRONT: "10.201.1.10"},
    "api1": {FRONT: "10.201.1.11", BACK: "10.201.2.11"},
    "api2": {FRONT: "10.201.1.12", BACK: "10.201.2.12"},
    "db": {BACK: "10.201.2.2"},
    "w1": {BACK: "10.201.2.21"},
    "w2": {BACK: "10.201.2.22"},
}
APIS = ("api1", "api2")
WORKERS = ("w1", "w2")
DB_PASSWORD = "fleet-db-password"  # a throwaway cluster's


class Hosts(Protocol):
    def address(self, host: str, network: str) -> str: ...
    def popen(self, host: str, command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]: ...
    def entered(self, host: str) -> contextlib.AbstractContextManager[None]: ...


class Loopback:
    """Every "host" is this one: the baseline with no network between the processes."""

    def address(self, host: str, network: str) -> str:
        return "127.0.0.1"

    def popen(self, host: str, command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, **options)

    def entered(self, host: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def network() -> Network:
    """The two networks and seven hosts drawn above (remove with ``close``)."""
    net = Network()
    try:
        net.add_network(FRONT)
        net.add_network(BACK)
        for host, addresses in ADDRESSES.items():
            net.add_host(host, addresses)
    except BaseException:
        net.close()
        raise
    return net


@dataclass
class Fleet:
    hosts: Hosts
    postgres: PostgresServer
    data_dir: Path
    public_url: str
    api_urls: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def worker_id(self, host: str) -> str:
        """What this worker's leases record (``hostname:pid``; ``ip netns exec`` keeps the pid)."""
        return f"{socket.gethostname()}:{self.processes[host].pid}"

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query the task database as its administrator, over the Unix socket (from any host)."""
        with psycopg.connect(self.postgres.admin_url("aigc")) as db:
            return db.execute(sql, params).fetchall()

    def stop(self, host: str, timeout: float = 60) -> int:
        """SIGTERM one process and wait for it; returns its exit code (it is killed past the timeout)."""
        process = self.processes[host]
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fleet(hosts: Hosts, tmp: Path, env: Mapping[str, str] | None = None) -> Iterator[Fleet]:
    """Start PostgreSQL, the workers, the API processes and the balancer on ``hosts``; stop all
    of them at the end, whatever happened."""
    on_network = isinstance(hosts, Network)
    db_address = hosts.address("db", BACK)
    db_port = 5432 if on_network else _free_port()
    postgres = PostgresServer(
        netns=hosts.namespace("db") if isinstance(hosts, Network) else None,
        listen=db_address,
        port=db_port,
        clients=f"{hosts.address('api1', BACK).rsplit('.', 1)[0]}.0/24",
    )
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # docs/operations.md's recipe: a role that owns its database (PostgreSQL 15 lets only
        # the owner, or a role granted CREATE, make tables in its public schema).
        with psycopg.connect(postgres.admin_url(), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE aigc LOGIN PASSWORD '{DB_PASSWORD}'")
            admin.execute("CREATE DATABASE aigc OWNER aigc")
        database_url = f"postgresql://aigc:{DB_PASSWORD}@{db_address}:{db_port}/aigc"

        data_dir = tmp / "shared"
        data_dir.mkdir(parents=True)
        api_config = tmp / "api.toml"  # the keys: API processes only
        api_config.write_text(
            f'[[keys]]\nsecret_id = "{SECRET_ID}"\nsecret_key = "{SECRET_KEY}"\n\n'
            f'[[keys]]\nsecret_id = "{OTHER_ID}"\nsecret_key = "{OTHER_KEY}"\n'
        )
        ports = {host: 8000 if on_network else _free_port() for host in ("lb", *APIS)}
        public_url = f"http://{hosts.address('lb', FRONT)}:{ports['lb']}"
        common = {"AIGC_IMAGE_DATABASE_URL": database_url, **(env or {})}
        python = [sys.executable, "-m"]

        def start(host: str, command: list[str], extra: Mapping[str, str] | None = None) -> None:
            with (tmp / f"{host}.log").open("ab") as log:
                started[host] = hosts.popen(
                    host, command, env=server_env({**common, **(extra or {})}), cwd=ROOT, stdout=log, stderr=log
                )

        for host in WORKERS:
            start(host, [*python, "aigc_image", "worker", "--data-dir", str(data_dir)])
        for host in APIS:
            serve = ["aigc_image", "serve", "--no-worker", "--data-dir", str(data_dir), "--config", str(api_config)]
            serve += ["--host", "0.0.0.0" if on_network else "127.0.0.1", "--port", str(ports[host])]
            start(host, [*python, *serve], {"AIGC_IMAGE_PUBLIC_URL": public_url})
        api_urls = {host: f"http://{hosts.address(host, FRONT)}:{ports[host]}" for host in APIS}
        backends = [url.removeprefix("http://") for url in api_urls.values()]
        listen = f"{'0.0.0.0' if on_network else '127.0.0.1'}:{ports['lb']}"
        start("lb", [*python, "tests.balancer", "--listen", listen, *backends])

        running = Fleet(hosts, postgres, data_dir, public_url, api_urls, started)
        with hosts.entered("client"):
            wait_for(lambda: _ready(running, tmp), timeout=180)
        yield running
    finally:
        for process in started.values():
            if process.poll() is None:
                process.terminate()
        for process in started.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        postgres.remove()


def _ready(fleet: Fleet, tmp: Path) -> bool:
    """Both API processes answer through the balancer's network and both workers reported in."""
    for host, process in fleet.processes.items():
        if process.poll() is not None:
            log = (tmp / f"{host}.log").read_text(errors="replace")
            raise RuntimeError(f"{host} exited with code {process.returncode}:\n{log}")
    try:
        views = [httpx.get(f"{url}/readyz", timeout=5).json() for url in fleet.api_urls.values()]
    except (httpx.HTTPError, ValueError):
        return False
    wanted = {fleet.worker_id(host) for host in WORKERS}
    return all(wanted <= {worker["id"] for worker in view.get("workers", [])} for view in views)
