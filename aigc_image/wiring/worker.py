"""A worker's assembly: its stages from Settings (``build_worker``, for the worker process), or
from parts (``assemble``, which tests call with their own store, engine and storage).

Nothing here imports the HTTP layer: a worker process never loads Starlette or protocol/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.clock import Clock, SystemClock
from aigc_image.config import Settings
from aigc_image.deployment import worker_agrees
from aigc_image.engines.base import Engine
from aigc_image.fetch.fetcher import Fetcher
from aigc_image.moderation.review import ContentReview
from aigc_image.results.buckets import Results
from aigc_image.store import TaskStore, open_store
from aigc_image.store.base import worker_id as local_worker_id
from aigc_image.wiring import catalog_from, preloaded, review_from, scheduling_from, storage_from
from aigc_image.worker.admission import Admission
from aigc_image.worker.delivery import DELIVERY_THREADS, Delivery, Render
from aigc_image.worker.generation import Generation
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.references import References
from aigc_image.worker.render import Renderer, render
from aigc_image.worker.reporting import Reporter
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.screening import ImageScreen
from aigc_image.worker.shutdown import Shutdown
from aigc_image.worker.worker import Stages, Worker


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker's stages take from the settings (``options_from``)."""

    lease_seconds: float = 30.0
    poll_interval: float = 2.0
    shutdown_grace: float = 30.0
    task_timeout: float = 0.0  # 0: no limit
    max_batch: int = 1
    batch_wait: float = 0.0  # seconds
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_reference_pixels: int = 4096 * 4096
    fetch_workers: int = 16  # fetch.workers
    fetch_per_key: int = 4  # fetch.per_key
    fetch_max_total: float = 60.0  # fetch.max_total_seconds
    content_producer: str = "aigc-image"


def options_from(settings: Settings) -> WorkerOptions:
    conf = settings.worker
    return WorkerOptions(
        lease_seconds=conf.lease_seconds,
        poll_interval=conf.poll_interval,
        shutdown_grace=conf.shutdown_grace,
        task_timeout=conf.task_timeout,
        max_batch=conf.max_batch,
        batch_wait=conf.batch_wait_ms / 1000,
        retry=RetryPolicy(conf.max_attempts, conf.retry_base_delay, conf.retry_max_delay),
        max_reference_pixels=settings.fetch.max_pixels,
        fetch_workers=settings.fetch.workers,
        fetch_per_key=settings.fetch.per_key,
        fetch_max_total=settings.fetch.max_total_seconds,
        content_producer=settings.content_producer,
    )


def assemble(
    store: TaskStore,
    engine: Engine,
    catalog: Catalog,
    storage: Results,
    clock: Clock,
    options: WorkerOptions | None = None,
    *,
    review: ContentReview | None = None,
    fetcher: Fetcher | None = None,
    render: Render = render,
    worker_id: str | None = None,
    device: str | None = None,
) -> Worker:
    """A worker over these parts. ``device``: as reported (default: the engine's)."""
    options = options or WorkerOptions()
    worker_id = worker_id or local_worker_id(os.getpid())
    shutdown = Shutdown(clock, options.shutdown_grace)
    reporter = Reporter(store, clock, engine, shutdown, worker_id, device or str(getattr(engine, "device", "cpu")))
    outcomes = Outcomes(store, clock, options.retry, shutdown, reporter)
    screen = ImageScreen(review)
    admission = Admission(
        store, clock, catalog, outcomes, reporter, worker_id,
        lease_seconds=options.lease_seconds, max_batch=options.max_batch, batch_wait=options.batch_wait,
    )  # fmt: skip
    generation = Generation(
        engine, outcomes, reporter, shutdown, store, clock,
        lease_seconds=options.lease_seconds, task_timeout=options.task_timeout,
    )  # fmt: skip
    references = References(
        fetcher, screen, outcomes, reporter, store.interrupt_wait, max_pixels=options.max_reference_pixels,
        workers=options.fetch_workers, per_key=options.fetch_per_key, max_total_seconds=options.fetch_max_total,
    )  # fmt: skip
    stages = Stages(
        admission=admission,
        references=references,
        generation=generation,
        delivery=Delivery(storage, render, screen, outcomes, reporter, options.content_producer),
        outcomes=outcomes,
        reporter=reporter,
    )
    return Worker(store, stages, shutdown, options.poll_interval)


@dataclass(frozen=True)
class WorkerProcess:
    """What ``aigc-image worker`` runs (worker/process.py): the worker, the models to load first,
    and the image encoders' child processes (GPU workers only) to start and close."""

    worker: Worker
    preload: list[ModelEntry]
    renderer: Renderer | None


def build_worker(settings: Settings, torch_device: str, device: str = "auto") -> WorkerProcess:
    """A worker on ``torch_device`` (after ``hardware.pin``) as ``settings`` say. A preloaded model
    the catalogue does not have is a ConfigError, and a default model the deployment disagrees on
    stops it (deployment.py), before anything slow happens."""
    clock = SystemClock()
    catalog, origin = catalog_from(settings)
    preload = preloaded(settings, catalog)
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts, scheduling_from(settings))
    try:
        worker_agrees(store, catalog, origin, torch_device, f"worker {local_worker_id(os.getpid())}", clock.now())
    except BaseException:
        store.close()
        raise
    if settings.worker.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.worker.torch_threads)
    from aigc_image.engines.diffusers_engine import DiffusersEngine  # torch and diffusers: after the checks

    engine = DiffusersEngine(torch_device, settings.models.allow_download, settings.worker.max_loaded_models)
    # GPU workers encode in child processes: Pillow holds the GIL (worker/render.py)
    renderer = Renderer(DELIVERY_THREADS) if engine.device.type == "cuda" else None
    fetch = settings.fetch
    worker = assemble(
        store,
        engine,
        catalog,
        storage_from(settings, clock),
        clock,
        options_from(settings),
        review=review_from(settings),
        fetcher=Fetcher(fetch.allow_networks, fetch.max_bytes, fetch.timeout),
        render=renderer or render,
        device=None if device == "auto" else device,
    )
    return WorkerProcess(worker, preload, renderer)
