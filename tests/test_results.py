"""Result URLs: signed, expiring after the TTL, swept from disk; and InternalError on a broken store.

In-process (Starlette TestClient) so a manual clock can move time by hours.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from aigc_image.clock import ManualClock
from aigc_image.config import load_settings
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.protocol.signing import sign_tc3_headers
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store.base import TaskStore
from aigc_image.wiring import catalog_from
from aigc_image.wiring.api import build_service
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.retention import Sweeper
from aigc_image.worker.worker import Worker
from tests.helpers import SECRET_ID, SECRET_KEY, assert_error_envelope

TTL = 12 * 3600


@dataclass
class Harness:
    client: TestClient
    clock: ManualClock
    store: TaskStore
    storage: LocalStorage
    worker: Worker

    def call(self, action: str, params: dict[str, Any]) -> Any:
        body = json.dumps(params).encode()
        headers = sign_tc3_headers(
            secret_id=SECRET_ID, secret_key=SECRET_KEY, action=action, body=body, host="testserver",
            timestamp=int(self.clock.now()),
        )  # fmt: skip
        return self.client.post("/", content=body, headers=headers)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    settings = load_settings(
        environ={"AIGC_IMAGE_DATA_DIR": str(tmp_path), "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random"}
    )
    clock = ManualClock()
    app, store, storage = build_service(settings, clock, {SECRET_ID: SECRET_KEY})
    worker = assemble(store, DiffusersEngine("cpu"), catalog_from(settings)[0], storage, clock, WorkerOptions(60))
    with TestClient(app, base_url="http://testserver") as client:
        assert isinstance(storage.own, LocalStorage)
        yield Harness(client, clock, store, storage.own, worker)
    store.close()


def finished_task(harness: Harness, prompt: str = "x") -> tuple[str, list[str]]:
    created = harness.call("CreateAigcImageTask", {"Prompt": prompt, "OutputImageCount": 2})
    task_id = created.json()["Response"]["TaskId"]
    assert harness.worker.run_once()
    reply = harness.call("DescribeAigcImageTask", {"TaskId": task_id}).json()["Response"]
    assert reply["Status"] == "DONE"
    return task_id, reply["ImageUrls"]


def test_urls_work_until_they_expire_then_the_sweeper_deletes_the_files(harness: Harness) -> None:
    task_id, urls = finished_task(harness)
    assert all(url.startswith("http://127.0.0.1:8000/results/") for url in urls)  # AIGC_IMAGE_PUBLIC_URL default
    paths = [url.removeprefix("http://127.0.0.1:8000") for url in urls]
    for path in paths:
        reply = harness.client.get(path)
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"

    harness.clock.advance(TTL - 60)
    assert harness.client.get(paths[0]).status_code == 200
    assert Sweeper(harness.store, Results(harness.storage), harness.clock, TTL, 7 * 86400).sweep() == 0

    harness.clock.advance(120)
    assert harness.client.get(paths[0]).status_code == 403  # refused once expired, even before the sweep
    reply = harness.call("DescribeAigcImageTask", {"TaskId": task_id}).json()["Response"]
    assert reply["Status"] == "DONE" and reply["ImageUrls"] == [] and "expired" in reply["Message"]
    stored = list((harness.storage.root / task_id).iterdir())
    assert len(stored) == 2
    assert Sweeper(harness.store, Results(harness.storage), harness.clock, TTL, 7 * 86400).sweep() == 1
    assert not (harness.storage.root / task_id).exists()
    assert Sweeper(harness.store, Results(harness.storage), harness.clock, TTL, 7 * 86400).sweep() == 0


def test_forged_or_altered_urls_are_refused(harness: Harness) -> None:
    task_id, urls = finished_task(harness)
    path = urls[0].removeprefix("http://127.0.0.1:8000")
    key_part, query = path.split("?")
    expires = query.split("&")[0].removeprefix("Expires=")
    forged = [
        path.replace("Signature=", "Signature=0"),
        path.replace(f"Expires={expires}", f"Expires={int(expires) + 3600}"),
        path.replace("1-0.png", "1-1.png"),  # another image of the task, same signature
        key_part,  # no signature at all
        f"/results/..%2F..%2Fkeys.toml?{query}",
        f"/results/{task_id}/../../keys.toml?{query}",
    ]
    for url in forged:
        assert harness.client.get(url).status_code in (403, 404), url


def test_a_broken_store_answers_internal_error_without_details(harness: Harness) -> None:
    harness.store.close()  # the database connection is gone
    reply = harness.call("CreateAigcImageTask", {"Prompt": "x"})
    message = assert_error_envelope(reply, "InternalError")
    assert "sqlite" not in message.lower() and "closed" not in message.lower()


def test_task_records_are_deleted_after_the_retention_period(harness: Harness) -> None:
    task_id, _ = finished_task(harness)
    waiting = harness.call("CreateAigcImageTask", {"Prompt": "x"}).json()["Response"]["TaskId"]  # never run
    sweeper = Sweeper(harness.store, Results(harness.storage), harness.clock, TTL, 7 * 86400)
    harness.clock.advance(7 * 86400 - 60)
    sweeper.sweep()
    assert harness.call("DescribeAigcImageTask", {"TaskId": task_id}).json()["Response"]["Status"] == "DONE"
    harness.clock.advance(120)
    sweeper.sweep()
    assert_error_envelope(harness.call("DescribeAigcImageTask", {"TaskId": task_id}), "ResourceNotFound.TaskNotFound")
    assert not (harness.storage.root / task_id).exists()
    # A task that has not finished is never deleted, however old.
    assert harness.call("DescribeAigcImageTask", {"TaskId": waiting}).json()["Response"]["Status"] == "WAIT"


class StuckStorage(LocalStorage):
    """Local storage where the files of one task cannot be deleted (as S3 answering AccessDenied)."""

    stuck = ""

    def delete(self, key: str) -> None:
        if key.startswith(self.stuck):
            raise PermissionError(13, "Permission denied", key)
        super().delete(key)


def test_an_image_that_cannot_be_deleted_is_logged_once_and_retention_goes_on(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention used to stop at the first task whose images would not go: every sweep started
    again at that oldest task, so nothing after it was ever purged."""
    stuck, _ = finished_task(harness)
    later = [finished_task(harness, prompt)[0] for prompt in ("y", "z")]
    storage = StuckStorage(harness.storage.root, "http://127.0.0.1:8000", b"k")
    storage.stuck = stuck
    harness.clock.advance(TTL + 60)
    sweeper = Sweeper(harness.store, Results(storage), harness.clock, TTL, 7 * 86400)
    assert sweeper.sweep() == 3
    assert sweeper.sweep() == 0  # the stuck task is not tried again and again
    assert all(not (harness.storage.root / task_id).exists() for task_id in later)
    failures = [r for r in caplog.records if "could not delete" in r.getMessage()]
    assert len(failures) == 2 and all(stuck in r.getMessage() for r in failures)  # its two images, once each
