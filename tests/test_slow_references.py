"""One key's slow reference-image server against the live service (issue 23, item 1): a real
``aigc-image serve`` with one worker, on SQLite and on PostgreSQL, driven by the official SDK; the
image server is a real socket that sends a byte a second.

Key A creates three tasks whose reference image comes from the slow server; key B then creates a
plain task and one whose reference comes from a fast server. B's are done while A's three are still
being fetched. A's fetches are cut off at ``fetch.timeout`` (8 s), retried behind the work queued
meanwhile, and given what is left of ``fetch.max_total_seconds`` (12 s): then they fail, reason
``reference_unreachable``, the time spent over both attempts recorded with them. The in-process
tests (test_fetch_stage.py) cover the claim's limits, cancel and shutdown in more detail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_image.clock import SystemClock
from aigc_image.errors import Reason
from aigc_image.store import open_store
from tests.helpers import OTHER_ID, OTHER_KEY, create_request, describe, live_server, sdk_client, wait_until_finished
from tests.loopback import ImageServer, SlowServer, png
from tests.stores import Backend

pytestmark = pytest.mark.slow

FETCH_TIMEOUT, MAX_TOTAL = 8, 12  # seconds


@pytest.mark.parametrize("max_batch", [1, 8])
def test_a_keys_slow_image_server_delays_only_its_own_tasks(
    backend: Backend, tmp_path: Path, images: ImageServer, max_batch: int
) -> None:
    env = {
        "AIGC_IMAGE_DATABASE_URL": backend.url,
        "AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32",
        "AIGC_IMAGE_FETCH_TIMEOUT": str(FETCH_TIMEOUT),
        "AIGC_IMAGE_FETCH_MAX_TOTAL_SECONDS": str(MAX_TOTAL),
        "AIGC_IMAGE_WORKER_MAX_BATCH": str(max_batch),
        "AIGC_IMAGE_WORKER_RETRY_BASE_DELAY": "0.5",
    }
    with SlowServer(png()) as slow, live_server(tmp_path / "data", env=env) as server:
        a, b = sdk_client(server), sdk_client(server, OTHER_ID, OTHER_KEY)
        [warm] = [b.CreateAigcImageTask(create_request(Prompt="warm-up")).TaskId]
        assert wait_until_finished(b, warm)[-1].Status == "DONE"  # the pipeline is loaded

        slow_tasks = [
            a.CreateAigcImageTask(create_request(Prompt="x", ImageInfos=[{"ImageUrl": slow.url(f"{n}.png")}])).TaskId
            for n in range(3)
        ]
        assert slow.wait_for(lambda s: s.open == 3), "A's three fetches did not start"
        reference = images.add("fast.png", (64, 64), (20, 200, 40))
        plain = b.CreateAigcImageTask(create_request(Prompt="a lighthouse")).TaskId
        fetched = b.CreateAigcImageTask(create_request(ImageInfos=[{"ImageUrl": reference}])).TaskId
        assert wait_until_finished(b, plain)[-1].Status == "DONE"
        assert wait_until_finished(b, fetched)[-1].Status == "DONE"
        assert slow.open == 3 and slow.closed_at == [], "A's fetches ended before B's tasks were done"
        assert [describe(a, task_id).Status for task_id in slow_tasks] == ["RUN"] * 3

        if max_batch == 1:  # what follows does not depend on batching
            return
        for task_id in slow_tasks:
            final = wait_until_finished(a, task_id, timeout=120)[-1]
            assert final.Status == "FAIL" and f"fetch.max_total_seconds = {MAX_TOTAL} s" in final.Message
        assert slow.requests == 6  # each task fetched twice: 8 s, then the 4 s left
        store = open_store(backend.url, SystemClock())
        try:
            for task_id in slow_tasks:
                task = store.get_now(task_id)
                assert task is not None and (task.reason, task.attempts) == (Reason.REFERENCE_UNREACHABLE, 2)
                assert MAX_TOTAL - 0.5 <= task.fetch_seconds <= MAX_TOTAL + 2
                assert task.queued_at >= task.created_at + FETCH_TIMEOUT  # queued again when retried
        finally:
            store.close()
