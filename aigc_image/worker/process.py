"""The worker process: ``aigc-image worker`` (also the child ``serve`` supervises)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.clock import SystemClock
from aigc_image.config import Settings
from aigc_image.deployment import agree_on_default, describe
from aigc_image.fetch.fetcher import Fetcher
from aigc_image.hardware import Hardware, default_for, fits, pin, probe, require_gpu
from aigc_image.store import TaskStore, open_store
from aigc_image.store.base import worker_id
from aigc_image.wiring import catalog_from, review_from, scheduling_from, storage_from
from aigc_image.worker.render import Renderer, render
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.worker import DELIVERY_THREADS, Worker

log = logging.getLogger(__name__)


def _stop_when_orphaned(parent_pid: int, worker: Worker) -> None:
    while not worker.stopping:
        if os.getppid() != parent_pid:
            log.warning("the serve process %d is gone; stopping", parent_pid)
            worker.request_stop()
            return
        time.sleep(1.0)


def _agree_on_default(store: TaskStore, catalog: Catalog, origin: str, torch_device: str, clock: SystemClock) -> None:
    """Agree with the deployment on its default model; with none recorded or configured, this
    worker, the first, chooses the best model for its own device."""
    hardware: list[Hardware] = []

    def choose() -> tuple[ModelEntry, str]:
        hardware.append(probe((torch_device,)))
        return default_for(catalog, hardware[0])

    recorded = agree_on_default(store, catalog, origin, f"worker {worker_id(os.getpid())}", clock.now(), choose)
    if recorded is None:
        return
    log.info("the deployment's default model: %s, %s", recorded.label, describe(recorded))
    entry = catalog.with_default(recorded.label).default
    if entry.engine == "tiny-random":
        return
    here = hardware[0] if hardware else probe((torch_device,))
    if not fits(entry, here):
        log.warning("the deployment's default model %s does not fit this worker (%s): it will run offloaded or "
                    "not at all here", entry.label, here.describe())  # fmt: skip


def run_worker(settings: Settings, device: str = "auto", parent_pid: int | None = None) -> None:
    """Run one worker on ``device`` until SIGTERM/SIGINT; a second signal exits at once.

    On the first signal the worker stops claiming and gives its running task
    ``worker.shutdown_grace`` seconds, then interrupts it at the next step and hands it back.
    With ``parent_pid`` (set by ``serve``), the worker also stops when that process is gone,
    even if it was killed with SIGKILL and could not tell its child.
    """
    torch_device = pin(device)  # before anything initialises CUDA
    if torch_device.startswith("cuda"):
        require_gpu(device)
    from aigc_image.engines.diffusers_engine import DiffusersEngine

    clock = SystemClock()
    if settings.worker.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.worker.torch_threads)
    catalog, origin = catalog_from(settings)
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts, scheduling_from(settings))
    try:
        _agree_on_default(store, catalog, origin, torch_device, clock)
    except BaseException:
        store.close()
        raise
    engine = DiffusersEngine(torch_device, settings.models.allow_download, settings.worker.max_loaded_models)
    renderer = Renderer(DELIVERY_THREADS) if engine.device.type == "cuda" else None
    worker = Worker(
        store,
        engine,
        catalog,
        storage_from(settings, clock),
        clock,
        lease_seconds=settings.worker.lease_seconds,
        poll_interval=settings.worker.poll_interval,
        review=review_from(settings),
        shutdown_grace=settings.worker.shutdown_grace,
        retry=RetryPolicy(
            settings.worker.max_attempts, settings.worker.retry_base_delay, settings.worker.retry_max_delay
        ),
        content_producer=settings.content_producer,
        fetcher=Fetcher(settings.fetch.allow_networks, settings.fetch.max_bytes, settings.fetch.timeout),
        max_reference_pixels=settings.fetch.max_pixels,
        task_timeout=settings.worker.task_timeout,
        max_batch=settings.worker.max_batch,
        batch_wait=settings.worker.batch_wait_ms / 1000,
        device=None if device == "auto" else device,
        render=renderer or render,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now; the task's lease will expire and it will be retried")
            raise SystemExit(1)
        log.info("signal %d: stopping; the running task has %.0f s to finish", signum, worker.shutdown_grace)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent_pid is not None:
        threading.Thread(target=_stop_when_orphaned, args=(parent_pid, worker), daemon=True).start()
    try:
        if renderer is not None:
            renderer.start()
        worker.preload(list(settings.worker.preload))
        worker.run()
    finally:
        if renderer is not None:
            renderer.close()
        with contextlib.suppress(Exception):
            store.close()
