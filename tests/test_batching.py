"""Dynamic batching: claims, the batch key, equal images batched or not, and isolation inside a batch.

Claims run on SQLite and PostgreSQL alike; the worker runs the real tiny pipelines (and the tiny
copies of the real classes) in-process, with engine wrappers where a fault must be provoked.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.clock import ManualClock
from aigc_image.engines.base import GenerationRequest, StepCallback
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import OutOfMemory
from aigc_image.moderation.review import ContentReview
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import TaskStore
from aigc_image.tasks import Status, TaskSpec, new_task_id
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.delivery import MAX_IN_DELIVERY
from aigc_image.worker.worker import Worker
from tests.helpers import create, get, wait_for
from tests.stores import Backend
from tests.tiny_models import BUILDERS, save_tiny


def spec(prompt: str = "a lighthouse", seed: int = 1, count: int = 1, **changes: Any) -> TaskSpec:
    base = TaskSpec("tiny-random", "1", prompt, "", count, "png", 64, 64, 2, 6.0, "", seed=seed)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "results", "http://127.0.0.1:9", b"k")


def worker(
    store: Any, storage: LocalStorage | Results, clock: Any, engine: Any = None, review: Any = None, **options: Any
) -> Worker:
    """A worker over the real store (or a spy of it) and storage; ``options``: WorkerOptions'."""
    results = storage if isinstance(storage, Results) else Results(storage)
    return assemble(
        store, engine or DiffusersEngine("cpu"), load_catalog(default_model="tiny-random"), results, clock,
        WorkerOptions(**({"max_batch": 8, "lease_seconds": 60, "poll_interval": 0.1} | options)), review=review,
    )  # fmt: skip


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def within_rounding(first: np.ndarray, second: np.ndarray) -> bool:
    """The documented tolerance (docs/operations.md): at most one level of 255, on at most 0.1% of pixels."""
    difference = np.abs(first - second)
    return bool(difference.max() <= 1 and (difference > 0).mean() <= 0.001)


# -- the batch key ---------------------------------------------------------------------------------


def test_the_batch_key_covers_what_must_match_and_nothing_else() -> None:
    key = spec().batch_key
    same = [spec(prompt="a boat", seed=9, count=3), spec(output_format="jpeg", logo=True, delivered=(80, 48))]
    assert all(other.batch_key == key for other in same)
    different = [
        spec(model_version="2"), spec(width=80), spec(steps=3), spec(guidance_scale=7.0), spec(negative_prompt="fog"),
        spec(scene_type="3d_panorama"), spec(reference_urls=("https://a.example/1.png",)), spec(sampler="DDIM"),
        spec(loras=(("ink", 0.8),)), spec(loras=(("ink", 0.5),)), spec(loras=(("ink", 0.8), ("paper", 1.0))),
    ]  # fmt: skip
    assert len({other.batch_key for other in different} | {key}) == len(different) + 1
    one_ref = spec(reference_urls=("https://a.example/1.png",), strength=0.5)
    assert one_ref.batch_key == spec(reference_urls=("https://a.example/2.png",), strength=0.5).batch_key
    assert one_ref.batch_key != spec(reference_urls=("https://a.example/1.png",), strength=0.6).batch_key
    assert one_ref.batch_key != spec(reference_urls=("https://a.example/1.png",) * 2, strength=0.5).batch_key


# -- claims, on both stores ------------------------------------------------------------------------


def test_a_claim_takes_up_to_the_limit_of_compatible_tasks_oldest_first(store: TaskStore, clock: ManualClock) -> None:
    ids = []
    for index in range(6):
        ids.append(new_task_id())
        create(store, ids[-1], "k", spec(prompt=f"p{index}", steps=2 if index != 2 else 3))
        clock.advance(0.001)
    claimed = [claim.task.task_id for claim in store.claim("w", limit=4, lease_seconds=60)]
    assert claimed == [ids[0], ids[1], ids[3], ids[4]]  # not the one with other steps
    assert [claim.task.task_id for claim in store.claim("w", limit=4, lease_seconds=60)] == [ids[2]]


def test_the_oldest_task_is_never_starved_by_a_stream_of_others(store: TaskStore, clock: ManualClock) -> None:
    lonely = new_task_id()
    create(store, lonely, "k", spec(steps=5))
    for round_ in range(3):
        for index in range(4):
            clock.advance(0.001)
            create(store, new_task_id(), "k", spec(prompt=f"{round_}-{index}"))
    assert [claim.task.task_id for claim in store.claim("w", limit=8, lease_seconds=60)] == [lonely]


def test_a_claim_can_add_tasks_of_one_batch_key(store: TaskStore, clock: ManualClock) -> None:
    first, other, fits = new_task_id(), new_task_id(), new_task_id()
    for task_id, one in ((first, spec()), (other, spec(steps=4)), (fits, spec(prompt="later"))):
        create(store, task_id, "k", one)
        clock.advance(0.001)
    [claim] = store.claim("w", limit=1, lease_seconds=60)
    more = store.claim("w", limit=3, lease_seconds=60, batch_key=claim.task.spec.batch_key)
    assert [c.task.task_id for c in more] == [fits]


# -- equal images, batched or alone ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelEntry]:
    root = tmp_path_factory.mktemp("batch-models")
    catalog = load_catalog()
    labels = {
        "HunyuanImagePipeline": "Hunyuan:3.0", "HunyuanDiTPipeline": "Hunyuan:dit-v1.2",
        "QwenImagePipeline": "Qwen:0925", "StableDiffusionPipeline": "SD-Turbo:1.0",
        "StableDiffusionXLPipeline": "SDXL-Turbo:1.0", "QwenImage21Pipeline": "Qwen:2.1",
        "ZImagePipeline": "Z-Image:turbo", "Flux2KleinPipeline": "FLUX.2:klein-4b",
    }  # fmt: skip
    entries = {"tiny-random": catalog.resolve("tiny-random", None)}
    for pipeline, label in labels.items():
        name, version = label.split(":")
        folder = save_tiny(pipeline, root / pipeline) if pipeline in BUILDERS else root
        entries[label] = catalog.resolve(name, version).changed(source=str(folder), image_source="", image_shared=())
    return entries


@pytest.mark.parametrize(
    "label",
    [
        "tiny-random", "Hunyuan:3.0", "Hunyuan:dit-v1.2", "Qwen:0925", "SD-Turbo:1.0", "SDXL-Turbo:1.0", "Qwen:2.1",
        "Z-Image:turbo", "FLUX.2:klein-4b",
    ],
)  # fmt: skip
def test_a_tasks_images_batched_are_its_images_alone(tiny_models: dict[str, ModelEntry], label: str) -> None:
    entry = tiny_models[label]
    engine = DiffusersEngine("cpu", allow_download=False)
    guidance = entry.guidance_scale if entry.guidance_scale is None or entry.guidance_scale > 1 else 4.0
    requests = [
        GenerationRequest(prompt, "fog" if index % 2 and entry.negative_prompt else "", count, 64, 64, 2,
                          guidance if entry.guidance else None, seed=seed)
        for index, (prompt, count, seed) in enumerate([("a lighthouse", 2, 5), ("a boat", 1, 6), ("a cat", 3, 7)])
    ]  # fmt: skip
    batched = engine.generate(entry, requests, lambda step, steps: None)
    assert [len(images) for images in batched] == [2, 1, 3]  # each request's own count
    for request, images in zip(requests, batched, strict=True):
        [alone] = engine.generate(entry, [request], lambda step, steps: None)
        assert all(within_rounding(pixels(a), pixels(b)) for a, b in zip(images, alone, strict=True)), label


def test_a_worker_runs_compatible_tasks_as_one_call_and_each_gets_its_own_images(
    storage: LocalStorage, tmp_path: Path
) -> None:
    """Batched and unbatched runs of the same tasks, each over a store of its own, give the same images."""
    specs = [spec(prompt=f"a lighthouse {i}", seed=10 + i, count=1 + i % 3) for i in range(5)]
    results = {}
    for max_batch in (1, 8):
        store = Backend("sqlite", f"sqlite:///{tmp_path / f'b{max_batch}.db'}").open(ManualClock())
        engine = Counting(DiffusersEngine("cpu"))
        ids = [new_task_id() for _ in specs]
        for task_id, one in zip(ids, specs, strict=True):
            create(store, task_id, "k", one)
        run = worker(store, storage, ManualClock(), engine, max_batch=max_batch)
        while run.run_once():
            pass
        assert engine.calls == ([5] if max_batch == 8 else [1] * 5)
        tasks = [get(store, task_id) for task_id in ids]
        assert all(task.status is Status.DONE and len(task.result_keys) == one.image_count
                   for task, one in zip(tasks, specs, strict=True))  # fmt: skip
        results[max_batch] = [[pixels(Image.open(storage.root / key)) for key in task.result_keys] for task in tasks]
        store.close()
    for alone, batched in zip(results[1], results[8], strict=True):
        assert all(within_rounding(a, b) for a, b in zip(alone, batched, strict=True))


# -- isolation inside a batch ----------------------------------------------------------------------


class Counting:
    """The real engine, recording how many requests each call served; optionally failing calls."""

    def __init__(self, inner: DiffusersEngine, fail: Any = None, on_step: Any = None) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.fail = fail
        self.on_step = on_step

    def generate(
        self, entry: ModelEntry, requests: Sequence[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        self.calls.append(len(requests))
        if self.fail is not None:
            self.fail(requests)

        def step(done: int, total: int) -> None:
            if self.on_step is not None:
                self.on_step(done, total)
            on_step(done, total)

        return self.inner.generate(entry, requests, step)

    def loaded(self) -> list[str]:
        return self.inner.loaded()


def batch_of(store: TaskStore, clock: ManualClock, count: int, **changes: Any) -> list[str]:
    """``count`` compatible tasks, created in this order (a millisecond apart)."""
    ids = [new_task_id() for _ in range(count)]
    for index, task_id in enumerate(ids):
        create(store, task_id, "k", spec(prompt=f"task {index}", seed=index, **changes))
        clock.advance(0.001)
    return ids


def test_out_of_memory_splits_the_batch_and_retries_the_halves(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    def too_many(requests: Sequence[GenerationRequest]) -> None:
        if len(requests) > 2:
            raise OutOfMemory("cuda:0 ran out of memory")

    engine = Counting(DiffusersEngine("cpu"), fail=too_many)
    ids = batch_of(store, clock, 4)
    assert worker(store, storage, clock, engine).run_once()
    assert engine.calls == [4, 2, 2]
    assert all(get(store, task_id).status is Status.DONE for task_id in ids)


def test_an_output_refused_by_review_fails_only_its_own_task(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    checked: list[int] = []

    def refuse_the_second_image(kind: str, content: Any) -> str | None:
        checked.append(1)
        return "refused" if kind == "output_image" and len(checked) == 2 else None

    ids = batch_of(store, clock, 3)
    worker(store, storage, clock, review=ContentReview([], refuse_the_second_image)).run_once()
    statuses = [get(store, task_id).status for task_id in ids]
    assert statuses == [Status.DONE, Status.FAIL, Status.DONE]
    assert "refused by content review" in get(store, ids[1]).message
    assert not (storage.root / ids[1]).exists()


def test_a_lost_lease_drops_only_that_task(store: TaskStore, storage: LocalStorage, clock: ManualClock) -> None:
    ids = batch_of(store, clock, 3, steps=3)

    def steal_the_second(done: int, total: int) -> None:
        if done == 1:  # another worker took the first task over: its lease is someone else's now
            clock.advance(61)
            [stolen] = store.claim("thief", 1, 60)
            assert stolen.task.task_id == ids[0] and stolen.alone

    run = worker(store, storage, clock, Counting(DiffusersEngine("cpu"), on_step=steal_the_second))
    run.run_once()
    first = get(store, ids[0])
    assert first.status is Status.RUN and first.attempts == 2  # the thief's attempt, untouched by us
    assert [get(store, task_id).status for task_id in ids[1:]] == [Status.DONE, Status.DONE]
    assert not (storage.root / ids[0]).exists()


def test_shutdown_hands_every_task_of_the_batch_back(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    ids = batch_of(store, clock, 3, steps=3)
    run: Worker

    def stop_during_the_image(done: int, total: int) -> None:
        run.request_stop()
        clock.advance(31)  # past the 30 s grace

    run = worker(store, storage, clock, Counting(DiffusersEngine("cpu"), on_step=stop_during_the_image))
    run.run_once()
    tasks = [get(store, task_id) for task_id in ids]
    assert [(task.status, task.attempts) for task in tasks] == [(Status.WAIT, 0)] * 3


def test_progress_is_recorded_for_every_task_of_the_batch_off_the_generating_thread(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    ids = batch_of(store, clock, 3, steps=4)
    seen: dict[str, list[tuple[int, int]]] = {task_id: [] for task_id in ids}
    recorded = {step: threading.Event() for step in range(1, 5)}  # set once every task has that step
    writers: set[str] = set()
    record = store.heartbeat

    def heartbeat(task_id: str, token: str, lease: float, progress: tuple[int, int] | None = None) -> bool:
        writers.add(threading.current_thread().name)
        if progress is not None:
            seen[task_id].append(progress)
            if all(progress in steps for steps in seen.values()):
                recorded[progress[0]].set()
        return record(task_id, token, lease, progress)

    def after_the_last_step_was_recorded(done: int, total: int) -> None:
        if done > 1:  # the keeper, not this thread, writes the previous step
            assert recorded[done - 1].wait(30), f"step {done - 1} was never recorded"

    engine = Counting(DiffusersEngine("cpu"), on_step=after_the_last_step_was_recorded)
    spy = {"__getattr__": lambda self, name: getattr(store, name), "heartbeat": staticmethod(heartbeat)}
    run = worker(type("Spy", (), spy)(), storage, clock, engine, lease_seconds=0.3)  # renewed every 0.1 s
    run.run_once()
    for task_id in ids:
        assert seen[task_id] == sorted(seen[task_id]) and {(1, 4), (2, 4), (3, 4)} <= set(seen[task_id]), seen
    assert writers == {"leases"}, "the thread that drives the pipeline must not wait for the store"
    assert [get(store, task_id).status for task_id in ids] == [Status.DONE] * 3


def test_a_part_filled_batch_waits_for_more_within_the_admission_window(
    backend: Backend, storage: LocalStorage, clock: ManualClock
) -> None:
    """A task created while the worker waits in its window joins the batch. The window (30 s of the
    test's clock, which stands still) can only end by filling, so nothing depends on timing."""
    store = backend.open(clock)
    first, later = new_task_id(), new_task_id()
    create(store, first, "k", spec())
    waits: list[float] = []

    def wait_for_work(timeout: float) -> None:
        if not waits:  # the task arrives from another connection while the worker waits for it
            other = backend.open(clock)
            create(other, later, "k", spec(prompt="later"))
            other.close()
        waits.append(timeout)
        store.wait_for_work(timeout)  # the create's wake-up ends it

    spy = {"__getattr__": lambda self, name: getattr(store, name), "wait_for_work": staticmethod(wait_for_work)}
    engine = Counting(DiffusersEngine("cpu"))
    worker(type("Spy", (), spy)(), storage, clock, engine, max_batch=2, batch_wait=30.0).run_once()
    assert waits == [30.0] and engine.calls == [2]
    assert [get(store, task_id).status for task_id in (first, later)] == [Status.DONE, Status.DONE]
    store.close()


class SlowResults(Results):
    """Stores nothing until ``release`` is set: a slow upload."""

    def __init__(self, storage: LocalStorage) -> None:
        super().__init__(storage)
        self.release = threading.Event()

    def put(self, key: str, data: bytes) -> None:
        assert self.release.wait(30), "never released"
        super().put(key, data)


def test_the_next_batch_generates_while_the_last_one_is_stored(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    first, second = batch_of(store, clock, 1), batch_of(store, clock, 1, steps=3)  # two batch keys
    engine = Counting(DiffusersEngine("cpu"))
    run = worker(store, slow := SlowResults(storage), clock, engine)
    assert run.run_once(overlap=True)  # returns with its image still being stored
    assert get(store, first[0]).status is Status.RUN and first[0] in run.record().running

    nxt = threading.Thread(target=run.run_once, kwargs={"overlap": True})
    nxt.start()  # generates the second batch now, then waits for the first to be stored
    wait_for(lambda: len(engine.calls) == 2, timeout=30)
    assert engine.calls == [1, 1] and get(store, first[0]).status is Status.RUN
    slow.release.set()
    nxt.join(30)
    run.stages.delivery.wait()
    assert [get(store, task_id).status for task_id in first + second] == [Status.DONE, Status.DONE]
    assert run.record().running == [] and run.record().state == "idle"


def test_the_tasks_of_a_dead_worker_are_taken_over_one_at_a_time_with_nothing_beside_them(
    store: TaskStore, storage: LocalStorage, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One of them may have killed it (a crash in a native library, the kernel's OOM killer): each
    runs alone, once this worker's other batches are stored, and no batch generates beside it."""
    in_delivery = batch_of(store, clock, 1, steps=3)
    died_with = batch_of(store, clock, 2)
    assert len(store.claim("dead-worker", 8, lease_seconds=10, batch_key=spec().batch_key)) == 2
    waiting = batch_of(store, clock, 1)  # it fits their batch
    seen_at_generation: list[list[Status]] = []
    engine = Counting(DiffusersEngine("cpu"),
                      fail=lambda _: seen_at_generation.append([get(store, in_delivery[0]).status]))  # fmt: skip
    run = worker(store, slow := SlowResults(storage), clock, engine)
    assert run.run_once(overlap=True)  # in_delivery: generated, its image held in storage
    clock.advance(11)  # the dead worker's leases run out

    claim = store.claim

    def claim_then_store(*args: Any, **kwargs: Any) -> Any:
        claims = claim(*args, **kwargs)
        if claims and claims[0].alone:
            slow.release.set()  # the held image may be stored from now on
        return claims

    monkeypatch.setattr(store, "claim", claim_then_store)
    for _ in range(3):
        assert run.run_once(overlap=True)
    run.stages.delivery.wait()
    assert engine.calls == [1, 1, 1, 1]  # no orphan in a batch: not with each other, nor with a waiting task
    assert seen_at_generation[1] == [Status.DONE]  # the first orphan generated only once the held batch was stored
    tasks = [get(store, task_id) for task_id in in_delivery + died_with + waiting]
    assert [task.status for task in tasks] == [Status.DONE] * 4
    assert [task.attempts for task in tasks] == [1, 2, 2, 1]


def test_tasks_already_waiting_fill_the_batch_without_waiting_for_a_wake_up(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    """Tasks created between the first claim and the admission window are taken at once."""
    ids = batch_of(store, clock, 2)
    waits: list[float] = []
    claim = store.claim

    def one_at_first(
        worker_id: str, limit: int, lease_seconds: float, batch_key: str | None = None, **models: Any
    ) -> Any:
        return claim(worker_id, 1 if batch_key is None else limit, lease_seconds, batch_key=batch_key, **models)

    spy = {"__getattr__": lambda self, name: getattr(store, name), "claim": staticmethod(one_at_first),
           "wait_for_work": staticmethod(waits.append)}  # fmt: skip
    engine = Counting(DiffusersEngine("cpu"))
    run = worker(type("Spy", (), spy)(), storage, clock, engine, max_batch=2, batch_wait=30.0)
    assert run.run_once()
    assert engine.calls == [2] and waits == []
    assert [get(store, task_id).status for task_id in ids] == [Status.DONE, Status.DONE]


def test_no_more_batches_wait_for_storage_than_the_limit(
    store: TaskStore, storage: LocalStorage, clock: ManualClock
) -> None:
    limit = MAX_IN_DELIVERY
    ids = [batch_of(store, clock, 1, steps=2 + n)[0] for n in range(limit + 1)]  # one batch key each
    engine = Counting(DiffusersEngine("cpu"))
    run = worker(store, slow := SlowResults(storage), clock, engine)
    loop = threading.Thread(target=lambda: [run.run_once(overlap=True) for _ in ids])
    loop.start()
    wait_for(lambda: len(engine.calls) == limit + 1, timeout=60)
    assert loop.is_alive(), "the last batch must wait for the oldest one's storage"
    assert len(run.record().running) == limit + 1
    slow.release.set()
    loop.join(30)
    run.stages.delivery.wait()
    assert all(get(store, task_id).status is Status.DONE for task_id in ids)
