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
from aigc_image.clock import SystemClock
from aigc_image.config import Settings
from aigc_image.hardware import probe
from aigc_image.protocol.connection import guarded_protocol
from aigc_image.wiring import build_service, catalog_from
from aigc_image.worker.retention import Sweeper

log = logging.getLogger(__name__)


def ensure_keys(settings: Settings) -> dict[str, str]:
    """The configured keys; on a first start with none, a generated pair, printed once."""
    keys = keyfiles.all_keys(settings)
    if not keys:
        pair = keyfiles.new_key_pair()
        path = keyfiles.add_key(settings.data_dir, pair)
        print(f"No API key configured; created one in {path}:", flush=True)
        print(f"  SecretId:  {pair.secret_id}", flush=True)
        print(f"  SecretKey: {pair.secret_key}", flush=True)
        keys = {pair.secret_id: pair.secret_key}
    return keys


def serve(settings: Settings, *, with_worker: bool, config_file: Path | None) -> None:
    """Run the API (and, unless told not to, a worker child process) until interrupted."""
    clock = SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    listener = _bind(settings.api.host, settings.api.port)
    port = listener.getsockname()[1]
    settings = settings.with_overrides(**{"api.port": port})
    keys = ensure_keys(settings)
    hardware = None if settings.models.default_model else probe(settings.worker.device)
    catalog, why = catalog_from(settings, hardware)
    print(f"default model: {catalog.default.label} ({why})", flush=True)
    app, store, storage = build_service(settings, clock, keys, catalog)

    stop = threading.Event()
    sweeper = Sweeper(store, storage, clock, settings.storage.url_ttl, settings.storage.task_retention)
    threading.Thread(target=sweeper.run, args=(stop, settings.storage.sweep_interval), daemon=True).start()
    supervisor = WorkerSupervisor(settings, config_file) if with_worker else None
    if supervisor:
        supervisor.start()

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
        if supervisor:
            supervisor.stop()
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
    """Keeps one ``aigc-image worker`` child running beside the API; restarts it if it dies."""

    def __init__(self, settings: Settings, config_file: Path | None) -> None:
        self._command = [sys.executable, "-m", "aigc_image", "worker", "--data-dir", str(settings.data_dir)]
        self._command += ["--parent-pid", str(os.getpid())]
        if config_file is not None:
            self._command += ["--config", str(config_file)]
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            self._child = subprocess.Popen(self._command)
            code = self._child.wait()
            if self._stopping.is_set():
                return
            # Back off while it keeps dying at start-up (a broken install), not after a long run.
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 60.0)
            log.error("worker exited with code %s; restarting it in %.0f s", code, delay)
            self._stopping.wait(delay)

    def stop(self, grace: float = 30.0) -> None:
        self._stopping.set()
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
