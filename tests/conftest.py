from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aigc_image.clock import ManualClock
from aigc_image.store import TaskStore
from tests.helpers import LiveServer, live_server
from tests.loopback import ImageServer, http_server
from tests.postgres_server import PostgresServer
from tests.stores import Backend

# -- every test that starts an aigc-image process is marked slow -----------------------------------

_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    _running[:] = [item]


def starts_aigc_image(command: Any) -> bool:
    """Whether ``command`` runs aigc-image (``python -m aigc_image …`` or the ``aigc-image`` script)."""
    args = [str(arg) for arg in ([command] if isinstance(command, (str, Path)) else command)]
    text = " ".join(args)
    return "-m aigc_image" in text or any(Path(arg.split()[0]).name == "aigc-image" for arg in args if arg)


class _GuardedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """subprocess.Popen (and so run, check_output) for the tests: starting aigc-image, in a
    session fixture too, fails the test that asked for it unless it is marked slow."""

    def __init__(self, args: Sequence[Any] | str, *rest: Any, **options: Any) -> None:
        test = _running[0] if _running else None
        if test is not None and starts_aigc_image(args) and test.get_closest_marker("slow") is None:
            pytest.fail(f"{test.nodeid} starts an aigc-image process: mark it @pytest.mark.slow", pytrace=False)
        super().__init__(args, *rest, **options)


subprocess.Popen = _GuardedPopen  # type: ignore[misc]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One `aigc-image serve` subprocess (API + worker, tiny-random default) for the session."""
    with live_server(tmp_path_factory.mktemp("serve")) as live:
        yield live


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster on loopback for the session; each test makes its own database."""
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh database of each kind: tests that take it run once per store."""
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'tasks.db'}")
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", server.new_database())


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto in server mode) on loopback, for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def clock() -> ManualClock:
    """Time that moves only when a test moves it."""
    return ManualClock()


@pytest.fixture
def store(backend: Backend, clock: ManualClock) -> Iterator[TaskStore]:
    """A store on a fresh database of each kind: tests that take it run on SQLite and PostgreSQL."""
    store = backend.open(clock)
    yield store
    store.close()


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    """A loopback server of reference images (tests add them with ``images.add``)."""
    server = ImageServer()
    with http_server(server.handler()) as base:
        server.port = int(base.rsplit(":", 1)[1])
        yield server
