from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, live_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One `aigc-image serve` subprocess (API + worker, tiny-random default) for the session."""
    with live_server(tmp_path_factory.mktemp("serve")) as live:
        yield live


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
