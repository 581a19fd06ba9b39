"""The worker process: ``aigc-image worker`` (also the child ``serve`` supervises)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType

from aigc_image.config import Settings
from aigc_image.hardware import pin, require_gpu
from aigc_image.wiring.worker import build_worker
from aigc_image.worker.worker import Worker

log = logging.getLogger(__name__)


def _stop_when_orphaned(parent_pid: int, worker: Worker) -> None:
    while not worker.stopping:
        if os.getppid() != parent_pid:
            log.warning("the serve process %d is gone; stopping", parent_pid)
            worker.request_stop()
            return
        time.sleep(1.0)


def run_worker(settings: Settings, device: str = "auto", parent_pid: int | None = None) -> None:
    """Run one worker on ``device`` until SIGTERM/SIGINT; a second signal exits at once.

    On the first signal the worker stops claiming and gives its running task
    ``worker.shutdown_grace`` seconds, then interrupts it at the next step and hands it back.
    With ``parent_pid`` (set by ``serve``), the worker also stops when that process is gone,
    even if it was killed with SIGKILL and could not tell its child.
    """
    worker: Worker | None = None  # None while it starts: a signal then stops it once it is built
    stop_at_start = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker is None:
            if stop_at_start.is_set():
                raise SystemExit(1)
            log.info("signal %d while starting: stopping as soon as the worker is built", signum)
            stop_at_start.set()
        elif worker.stopping:
            log.warning("second signal: exiting now; the task's lease will expire and it will be retried")
            raise SystemExit(1)
        else:
            log.info("signal %d: stopping; the running task has %.0f s to finish", signum, worker.shutdown.grace)
            worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)  # before the slow start (imports, the store, the default model)
    signal.signal(signal.SIGINT, on_signal)
    torch_device = pin(device)  # before anything initialises CUDA
    if torch_device.startswith("cuda"):
        require_gpu(device)
    built = build_worker(settings, torch_device, device)
    worker = built.worker
    if stop_at_start.is_set():
        worker.request_stop()
    if parent_pid is not None:
        threading.Thread(target=_stop_when_orphaned, args=(parent_pid, worker), daemon=True).start()
    try:
        if built.renderer is not None:
            built.renderer.start()
        if not worker.stopping:
            worker.preload(built.preload)
        worker.run()
    finally:
        if built.renderer is not None:
            built.renderer.close()
        with contextlib.suppress(Exception):
            worker.store.close()
