from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, live_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One `aigc-image serve` subprocess (API + worker, tiny-random default) for the session.

    Its rate limit is raised so tests can poll quickly; test_rate_limit.py checks the default.
    """
    limits = {"AIGC_IMAGE_API_RATE_LIMIT": "1000", "AIGC_IMAGE_API_RATE_BURST": "1000"}
    with live_server(tmp_path_factory.mktemp("serve"), env=limits) as live:
        yield live


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
