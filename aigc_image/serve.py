"""The API process: ``aigc-image serve``. Binds the socket, runs uvicorn, sweeps retention, and
supervises a worker child process (``--no-worker`` leaves workers to other hosts)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from aigc_image import keys as keyfiles
from aigc_image.clock import Clock, SystemClock
from aigc_image.config import Settings
from aigc_image.deployment import agree_on_default, describe
from aigc_image.hardware import default_for, probe, worker_devices
from aigc_image.keys import KeyRing
from aigc_image.protocol.connection import guarded_protocol
from aigc_image.store import StoreUnavailable, TaskStore
from aigc_image.store.base import worker_id
from aigc_image.wiring import catalog_from, preloaded
from aigc_image.wiring.api import build_service
from aigc_image.worker.retention import Sweeper

log = logging.getLogger(__name__)
HAND_BACK_SECONDS = 15.0  # after its grace period, time a stopping worker has to hand its task back
MAX_RESTART_DELAY = 60.0


def ensure_keys(settings: Settings, clock: Clock) -> KeyRing:
    """The configured keys, followed as keys.toml changes; on a first start with none, a
    generated pair, printed once."""
    if not keyfiles.all_keys(settings):
        pair = keyfiles.new_key_pair()
        path = keyfiles.add_key(settings.data_dir, pair)
        print(f"No API key configured; created one in {path}:", flush=True)
        print(f"  SecretId:  {pair.secret_id}", flush=True)
        print(f"  SecretKey: {pair.secret_key}", flush=True)
    return KeyRing(settings, clock)


def serve(settings: Settings, *, with_worker: bool, config_file: Path | None) -> None:
    """Run the API (and, unless told not to, a worker child process) until interrupted."""
    clock = SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    listener = _bind(settings.api.host, settings.api.port)
    port = listener.getsockname()[1]
    settings = settings.with_overrides(**{"api.port": port})
    keys = ensure_keys(settings, clock)
    catalog, origin = catalog_from(settings)
    if with_worker:
        preloaded(settings, catalog)  # a typo in worker.preload stops serve now, not each worker at start
    app, store, storage = build_service(settings, clock, keys, catalog, keys.weight)
    devices = worker_devices(settings.worker.devices) if with_worker else []
    try:
        # Its workers run on this host, so serve may choose for their hardware; an API alone may not.
        choose = (lambda: default_for(catalog, probe(settings.worker.devices))) if devices else None
        recorded = agree_on_default(store, catalog, origin, f"serve on {socket.gethostname()}", clock.now(), choose)
    except BaseException:
        store.close()
        raise
    if recorded is None:
        print("default model: none yet; the first worker to start chooses one for its hardware", flush=True)
    else:
        print(f"default model: {recorded.label}, {describe(recorded)}", flush=True)

    stop = threading.Event()
    sweeper = Sweeper(store, storage, clock, settings.storage.url_ttl, settings.storage.task_retention)
    threading.Thread(target=sweeper.run, args=(stop, settings.storage.sweep_interval), daemon=True).start()
    supervisors = [WorkerSupervisor(settings, config_file, store, device) for device in devices]
    for supervisor in supervisors:
        supervisor.start()
    if supervisors:
        print(f"workers on: {', '.join(devices)}", flush=True)

    config = uvicorn.Config(
        app,
        http=guarded_protocol(settings.api.max_header_bytes, settings.api.header_timeout),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler installed
    # before it. This one asks uvicorn to stop (also when SIGTERM comes before uvicorn listens for
    # it), so the cleanup below always runs and the process exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    print(f"aigc-image listening on http://{_url_host(settings.api.host)}:{port}", flush=True)
    try:
        server.run(sockets=[listener])
    finally:
        stop.set()
        for supervisor in supervisors:  # all stop together: each may take its grace period
            supervisor.terminate()
        for supervisor in supervisors:
            supervisor.wait()
        store.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class WorkerSupervisor:
    """Keeps one ``aigc-image worker`` child running beside the API, on one device (``serve`` runs
    one supervisor per device of ``worker.devices``).

    * It restarts a child that exits, backing off while it keeps failing at start-up (a broken
      install) or cannot be started at all, and never gives up.
    * A child that died (a crash, the OOM killer, ``kill -9``) cannot hand its tasks back, so the
      supervisor ends their leases at once: they run again on the restarted child within seconds,
      not after ``worker.lease_seconds``.
    * On shutdown the child gets ``worker.shutdown_grace`` to finish its task, plus time to hand it
      back, before it is killed.
    """

    def __init__(
        self,
        settings: Settings,
        config_file: Path | None,
        store: TaskStore,
        device: str = "auto",
        first_delay: float = 1.0,
    ) -> None:
        self._command = [sys.executable, "-m", "aigc_image", "worker", "--data-dir", str(settings.data_dir)]
        self._command += ["--device", device]
        self._command += ["--parent-pid", str(os.getpid())]
        if config_file is not None:
            self._command += ["--config", str(config_file)]
        self._store = store
        self.stop_timeout = settings.worker.shutdown_grace + HAND_BACK_SECONDS
        self._first_delay = first_delay
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        delay = self._first_delay
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._child = subprocess.Popen(self._command)
            except OSError as exc:
                log.error("cannot start the worker (%s); trying again in %.0f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                continue
            code = self._child.wait()
            if self._stopping.is_set():
                return
            self._hand_back(self._child.pid)
            forget_metrics_of(self._child.pid)
            # Back off while it keeps dying at start-up, not after a long run.
            long_run = time.monotonic() - started > MAX_RESTART_DELAY
            delay = self._first_delay if long_run else min(delay * 2, MAX_RESTART_DELAY)
            log.error("worker exited with code %s; restarting it in %.0f s", code, delay)
            self._stopping.wait(delay)

    def _hand_back(self, pid: int) -> None:
        try:
            handed = self._store.expire_leases_of(worker_id(pid))
        except StoreUnavailable as exc:
            log.warning("could not hand back the tasks of worker %s (%s); their leases will expire", pid, exc)
            return
        if handed:
            log.warning("worker %s died with %d task(s) in hand; they run again now", pid, handed)

    def alive(self) -> bool:
        child = self._child
        return child is not None and child.poll() is None

    def stop(self) -> None:
        self.terminate()
        self.wait()

    def terminate(self) -> None:
        """Ask the child to stop: it finishes or hands back its tasks."""
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()

    def wait(self) -> None:
        """Wait for the stopping child; kill it after its grace period and hand its tasks back."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        try:
            child.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.error("the worker did not stop within %.0f s; killing it", self.stop_timeout)
            child.kill()
            child.wait()
            self._hand_back(child.pid)


def forget_metrics_of(pid: int) -> None:
    """A dead worker's gauges (its GPU memory) leave /metrics; its counters stay counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
