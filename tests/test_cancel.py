"""CancelAigcImageTask and DeleteAigcImageTask, and queue positions, at every state of a task.

Three levels: the worker in-process on both stores (a cancel while a batch runs, and while its
images are being stored), the API in-process over SQLite (every reply and error Code, signed as
clients sign), and one live server driven by the official SDK's generic client (the real worker
dropping a cancelled task mid-run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.clock import ManualClock, SystemClock
from aigc_image.config import load_settings
from aigc_image.engines.base import GenerationRequest, StepCallback
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import Reason
from aigc_image.keys import all_keys
from aigc_image.protocol.signing import sign_tc3_headers
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import TaskStore
from aigc_image.tasks import Status, TaskSpec, new_task_id
from aigc_image.wiring.api import build_service
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.worker import Worker
from tests.helpers import (
    OTHER_ID,
    OTHER_KEY,
    SECRET_ID,
    SECRET_KEY,
    LiveServer,
    assert_error_envelope,
    create,
    get,
    live_server,
    wait_for,
)


def spec(prompt: str = "a lighthouse", steps: int = 3) -> TaskSpec:
    return TaskSpec("tiny-random", "1", prompt, "", 1, "png", 64, 64, steps, 6.0, "", seed=1)


def cancel(store: TaskStore, task_id: str) -> None:
    _, after = asyncio.run(store.cancel(task_id, "k", "cancelled"))
    assert after is not None and after.reason is Reason.CANCELLED


# -- the worker --------------------------------------------------------------------------------------


class Watching:
    """The real engine; ``on_step`` runs after each denoising step, before the worker's own callback."""

    def __init__(self, on_step: Any) -> None:
        self.inner = DiffusersEngine("cpu")
        self.on_step = on_step
        self.steps: list[int] = []

    def generate(
        self, entry: ModelEntry, requests: Sequence[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        def step(done: int, total: int) -> None:
            self.steps.append(done)
            self.on_step(done, total)
            on_step(done, total)

        return self.inner.generate(entry, requests, step)

    def loaded(self) -> list[str]:
        return self.inner.loaded()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "results", "http://127.0.0.1:9", b"k")


def worker(store: TaskStore, storage: LocalStorage, clock: ManualClock, engine: Any) -> Worker:
    catalog = load_catalog(default_model="tiny-random")
    return assemble(
        store, engine, catalog, Results(storage), clock, WorkerOptions(lease_seconds=60, poll_interval=0.1, max_batch=8)
    )


def batch(store: TaskStore, clock: ManualClock, count: int, steps: int = 3) -> list[str]:
    ids = []
    for index in range(count):
        ids.append(new_task_id())
        create(store, ids[-1], "k", spec(f"task {index}", steps))
        clock.advance(0.001)
    return ids


def stored(storage: LocalStorage, task_id: str) -> list[Path]:
    return sorted((storage.root / task_id).glob("*")) if (storage.root / task_id).exists() else []


def test_a_task_cancelled_mid_batch_is_dropped_and_the_others_finish(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ids = batch(store, clock, 3)

    def cancel_the_second(done: int, total: int) -> None:
        if done == 1:
            cancel(store, ids[1])
        clock.advance(21)  # a third of the lease: the step watch renews, and finds the lease gone

    with caplog.at_level(logging.WARNING):
        assert worker(store, storage, clock, Watching(cancel_the_second)).run_once()
    first, second, third = (get(store, task_id) for task_id in ids)
    assert (second.status, second.reason, second.result_keys) == (Status.FAIL, Reason.CANCELLED, ())
    assert stored(storage, ids[1]) == []
    for done in (first, third):
        assert done.status is Status.DONE and stored(storage, done.task_id)
    assert f"task {ids[1]}: cancelled by its key; abandoning this attempt" in caplog.text


def test_a_batch_whose_every_task_is_cancelled_stops_at_its_next_step(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    [task_id] = batch(store, clock, 1, steps=6)

    def cancel_it(done: int, total: int) -> None:
        if done == 1:
            cancel(store, task_id)
        else:
            clock.advance(21)  # the step watch renews, and finds the lease gone

    engine = Watching(cancel_it)
    worker(store, storage, clock, engine).run_once()
    assert engine.steps == [1, 2]  # the step after the cancel was the last
    assert get(store, task_id).status is Status.FAIL and stored(storage, task_id) == []


class CancelledWhileStoring(LocalStorage):
    """Local storage whose first write is followed at once by a cancel of that task: the race
    between storing a task's images and completing it."""

    def __init__(self, root: Path, store: TaskStore) -> None:
        super().__init__(root, "http://127.0.0.1:9", b"k")
        self.store = store
        self.written: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        self.written.append(key)
        cancel(self.store, key.split("/")[0])


def test_a_cancel_between_storing_and_completing_discards_the_images(
    store: TaskStore, tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    racy = CancelledWhileStoring(tmp_path / "results", store)
    [task_id] = batch(store, clock, 1)
    with caplog.at_level(logging.WARNING):
        worker(store, racy, clock, DiffusersEngine("cpu")).run_once()
    assert racy.written and stored(racy, task_id) == []
    task = get(store, task_id)
    assert (task.status, task.reason, task.result_keys) == (Status.FAIL, Reason.CANCELLED, ())
    assert "cancelled by its key before completion; discarding" in caplog.text


# -- the API, in-process ------------------------------------------------------------------------------


@dataclasses.dataclass
class Api:
    client: TestClient
    store: TaskStore
    storage: Results

    def call(self, action: str, params: dict[str, Any], key: tuple[str, str] = (SECRET_ID, SECRET_KEY)) -> Any:
        body = json.dumps(params).encode()
        headers = sign_tc3_headers(
            secret_id=key[0], secret_key=key[1], action=action, body=body, host="testserver", timestamp=int(time.time())
        )
        return self.client.post("/", content=body, headers=headers)

    def ok(self, action: str, params: dict[str, Any], **key: Any) -> dict[str, Any]:
        reply = self.call(action, params, **key).json()["Response"]
        assert "Error" not in reply, reply
        return reply  # type: ignore[no-any-return]

    def create(self, prompt: str = "a lighthouse") -> str:
        return str(self.ok("CreateAigcImageTask", {"Prompt": prompt, "ModelName": "tiny-random"})["TaskId"])

    def finish(self, task_id: str, done: bool) -> None:
        """Run ``task_id`` to DONE with one stored image, or to FAIL, as a worker would."""
        [claim] = [c for c in self.store.claim("w", 8, lease_seconds=60) if c.task.task_id == task_id]
        if done:
            key = f"{task_id}/1-0.png"
            self.storage.put(key, b"\x89PNG image")
            assert self.store.complete(task_id, claim.token, [key])
        else:
            assert self.store.fail(task_id, claim.token, "out of memory", Reason.OUT_OF_MEMORY)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[keys]]\nsecret_id = "{SECRET_ID}"\nsecret_key = "{SECRET_KEY}"\nweight = 2\n\n'
        f'[[keys]]\nsecret_id = "{OTHER_ID}"\nsecret_key = "{OTHER_KEY}"\n'
    )
    environ = {"AIGC_IMAGE_DATA_DIR": str(tmp_path / "data"), "AIGC_IMAGE_API_RATE_LIMIT": "0"}
    settings = load_settings(config, environ)
    app, store, storage = build_service(settings, SystemClock(), all_keys(settings), load_catalog())
    with TestClient(app, base_url="http://testserver") as client:
        yield Api(client, store, storage)
    store.close()


def test_cancel_a_waiting_task_and_again(api: Api) -> None:
    task_id = api.create()
    reply = api.ok("CancelAigcImageTask", {"TaskId": task_id})
    assert reply["Status"] == "FAIL" and "cancelled by its owner" in reply["Message"]
    assert {k: reply[k] for k in ("Status", "Message")} == {
        k: v for k, v in api.ok("CancelAigcImageTask", {"TaskId": task_id}).items() if k in ("Status", "Message")
    }  # again: the same answer
    described = api.ok("DescribeAigcImageTask", {"TaskId": task_id})
    assert (described["Status"], described["ImageUrls"], described["Message"]) == ("FAIL", [], reply["Message"])
    status = api.ok("DescribeAigcTaskStatus", {"TaskId": task_id})
    assert (status["TaskStatus"], status["TaskResultCode"]) == ("FAILED", -1)
    assert api.store.claim("w", 8, lease_seconds=60) == []


def test_cancel_a_running_task(api: Api) -> None:
    task_id = api.create()
    [claim] = api.store.claim("w", 8, lease_seconds=60)
    assert api.ok("CancelAigcImageTask", {"TaskId": task_id})["Status"] == "FAIL"
    assert not api.store.heartbeat(task_id, claim.token, 60)


@pytest.mark.parametrize("done", [True, False], ids=["DONE", "FAIL"])
def test_a_finished_task_cannot_be_cancelled_but_can_be_deleted(api: Api, done: bool) -> None:
    task_id = api.create()
    api.finish(task_id, done)
    message = assert_error_envelope(
        api.call("CancelAigcImageTask", {"TaskId": task_id}), "FailedOperation.TaskFinished"
    )
    assert task_id in message
    assert set(api.ok("DeleteAigcImageTask", {"TaskId": task_id})) == {"RequestId"}
    image = api.storage.own.root / task_id  # type: ignore[attr-defined]
    assert not image.exists()
    assert_error_envelope(api.call("DescribeAigcImageTask", {"TaskId": task_id}), "ResourceNotFound.TaskNotFound")
    assert_error_envelope(api.call("DeleteAigcImageTask", {"TaskId": task_id}), "ResourceNotFound.TaskNotFound")


def test_a_task_must_be_cancelled_before_it_is_deleted(api: Api) -> None:
    waiting, running = api.create("one"), api.create("two")
    api.store.claim("w", 1, lease_seconds=60)
    for task_id in (waiting, running):  # RUN, WAIT
        message = assert_error_envelope(
            api.call("DeleteAigcImageTask", {"TaskId": task_id}), "FailedOperation.TaskNotFinished"
        )
        assert "CancelAigcImageTask" in message
    api.ok("CancelAigcImageTask", {"TaskId": running})
    assert set(api.ok("DeleteAigcImageTask", {"TaskId": running})) == {"RequestId"}
    assert api.store.get_now(running) is None


def test_another_keys_task_is_not_found_for_cancel_and_delete(api: Api) -> None:
    task_id = api.create()
    other = (OTHER_ID, OTHER_KEY)
    for action in ("CancelAigcImageTask", "DeleteAigcImageTask"):
        assert_error_envelope(api.call(action, {"TaskId": task_id}, key=other), "ResourceNotFound.TaskNotFound")
    assert api.store.get_now(task_id).status is Status.WAIT


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "MissingParameter"),
        ({"TaskId": "../../etc/passwd"}, "InvalidParameterValue"),
        ({"TaskId": 7}, "InvalidParameter"),
        ({"TaskId": "4-AigcImage-" + "0" * 32, "Force": True}, "UnknownParameter"),
        ({"TaskId": "4-AigcImage-" + "0" * 32}, "ResourceNotFound.TaskNotFound"),
    ],
)
@pytest.mark.parametrize("action", ["CancelAigcImageTask", "DeleteAigcImageTask"])
def test_bad_cancel_and_delete_requests_are_refused(api: Api, action: str, params: dict[str, Any], code: str) -> None:
    assert_error_envelope(api.call(action, params), code)


def test_a_waiting_task_shows_how_many_tasks_are_ahead_of_it(api: Api) -> None:
    mine = [api.create(f"mine {n}") for n in range(4)]
    other = api.ok("CreateAigcImageTask", {"Prompt": "theirs", "ModelName": "tiny-random"}, key=(OTHER_ID, OTHER_KEY))[
        "TaskId"
    ]

    def info(task_id: str, key: tuple[str, str] = (SECRET_ID, SECRET_KEY)) -> dict[str, Any]:
        return json.loads(api.ok("DescribeAigcTaskStatus", {"TaskId": task_id}, key=key)["TaskInfo"])  # type: ignore[no-any-return]

    assert info(mine[0])["tasks_ahead"] == 0
    assert info(other, (OTHER_ID, OTHER_KEY))["tasks_ahead"] == 0  # the other key is not behind the burst
    assert info(mine[3])["tasks_ahead"] == 4  # three of its own key's, and the other key's
    [claim] = api.store.claim("w", 1, lease_seconds=60)
    assert "tasks_ahead" not in info(mine[0])  # running: no position
    assert claim.weight == 2.0  # the key's weight from the settings file, recorded at create


def test_cancels_and_waiting_tasks_by_weight_are_in_the_metrics(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from aigc_image.metrics import exposition

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = exposition(api.store, time.time()).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    cancelled = ("aigc_image_tasks_cancelled_total", (("status", "WAIT"),))
    before = samples().get(cancelled, 0.0)
    ids = [api.create(f"task {n}") for n in range(3)]
    api.ok("CreateAigcImageTask", {"Prompt": "theirs", "ModelName": "tiny-random"}, key=(OTHER_ID, OTHER_KEY))
    api.ok("CancelAigcImageTask", {"TaskId": ids[0]})
    api.ok("CancelAigcImageTask", {"TaskId": ids[0]})  # counted once
    after = samples()
    assert after[cancelled] - before == 1
    assert after[("aigc_image_tasks_waiting_by_weight", (("weight", "2"),))] == 2  # SECRET_ID has weight 2
    assert after[("aigc_image_keys_waiting", (("weight", "2"),))] == 1
    assert after[("aigc_image_tasks_waiting_by_weight", (("weight", "1"),))] == 1
    assert not any(SECRET_ID in str(labels) or OTHER_ID in str(labels) for _, labels in after)


# -- the official SDK's generic client against a live server -----------------------------------------


MODELS = """
[[models]]
name = "slow"
version = "1"
engine = "tiny-random"
steps = 400
width = 64
height = 64
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cancel")
    (root / "models.toml").write_text(MODELS)
    with live_server(root / "data", env={"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(root / "models.toml")}) as live:
        yield live


def common_client(server: LiveServer, key: tuple[str, str] = (SECRET_ID, SECRET_KEY)) -> CommonClient:
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=server.host))
    return CommonClient("mps", "2019-06-12", credential.Credential(*key), "ap-guangzhou", profile=profile)


@pytest.mark.slow
def test_the_sdk_cancels_a_running_task_and_the_worker_keeps_nothing_of_it(server: LiveServer) -> None:
    client = common_client(server)
    task_id = client.call_json("CreateAigcImageTask", {"Prompt": "a lighthouse", "ModelName": "slow"})["Response"][
        "TaskId"
    ]

    def running() -> bool:
        status = client.call_json("DescribeAigcTaskStatus", {"TaskId": task_id})["Response"]
        return status["TaskStatus"] == "RUNNING" and json.loads(status["TaskInfo"])["step"] > 0

    wait_for(running)
    reply = client.call_json("CancelAigcImageTask", {"TaskId": task_id})["Response"]
    assert reply["Status"] == "FAIL" and "cancelled" in reply["Message"]
    wait_for(lambda: f"task {task_id}: cancelled by its key; abandoning this attempt" in server.log.read_text())
    assert not (server.data_dir / "results" / task_id).exists()  # the worker stopped; nothing was stored
    again = client.call_json("CancelAigcImageTask", {"TaskId": task_id})["Response"]
    assert (again["Status"], again["Message"]) == (reply["Status"], reply["Message"])

    other = common_client(server, (OTHER_ID, OTHER_KEY))
    for action in ("CancelAigcImageTask", "DeleteAigcImageTask"):
        with pytest.raises(TencentCloudSDKException) as refused:
            other.call_json(action, {"TaskId": task_id})
        assert_error_envelope(refused.value, "ResourceNotFound.TaskNotFound")
    assert set(client.call_json("DeleteAigcImageTask", {"TaskId": task_id})["Response"]) == {"RequestId"}
    with pytest.raises(TencentCloudSDKException) as gone:
        client.call_json("DescribeAigcImageTask", {"TaskId": task_id})
    assert_error_envelope(gone.value, "ResourceNotFound.TaskNotFound")
