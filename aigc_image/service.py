"""Wiring: settings → store, registry, storage, app, workers. No logic of its own."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from aigc_image import keys as keyfiles
from aigc_image.clock import Clock, SystemClock
from aigc_image.config import ConfigError, Settings
from aigc_image.engines.registry import Registry, load_registry
from aigc_image.enhance import LlmEnhancer, PromptEnhancer
from aigc_image.fetch.fetcher import Fetcher
from aigc_image.fetch.policy import Network, parse_networks
from aigc_image.moderation.review import ContentReview, build_review
from aigc_image.protocol.actions import Actions, Limits
from aigc_image.protocol.app import build_app
from aigc_image.protocol.connection import guarded_protocol
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.storage.base import ResultStorage
from aigc_image.storage.local import LocalStorage
from aigc_image.storage.results import Results
from aigc_image.storage.s3 import S3Storage, s3_client
from aigc_image.storage.sweeper import Sweeper
from aigc_image.store import TaskStore, open_store
from aigc_image.worker.retry import RetryPolicy
from aigc_image.worker.worker import Worker

log = logging.getLogger(__name__)


def registry_from(settings: Settings) -> Registry:
    return load_registry(settings.models.registry_file, settings.models.default_model)


def storage_from(settings: Settings, clock: Clock) -> Results:
    """The service's own storage (local disk or an S3 bucket), and StoreCosParam buckets if configured."""
    conf = settings.storage
    own: ResultStorage
    if conf.backend == "local":
        own = LocalStorage(
            settings.data_dir / "results", settings.resolved_public_url, keyfiles.url_signing_key(settings)
        )
    elif conf.backend == "s3":
        if not conf.s3_bucket:
            raise ConfigError("storage.backend = s3 needs storage.s3_bucket")
        client = s3_client(
            conf.s3_endpoint, conf.s3_region, conf.s3_access_key_id, conf.s3_secret_access_key, conf.s3_addressing_style
        )
        own = S3Storage(client, conf.s3_bucket, clock, conf.s3_prefix)
    else:
        raise ConfigError(f"storage.backend must be local or s3; got {conf.backend!r}")

    def user_bucket(region: str, bucket: str) -> S3Storage:
        endpoint = conf.cos_endpoint.replace("{region}", region)
        client = s3_client(endpoint, region, conf.cos_secret_id, conf.cos_secret_key, conf.cos_addressing_style)
        return S3Storage(client, bucket, clock, region=region)

    return Results(own, user_bucket if conf.cos_secret_id and conf.cos_secret_key else None)


def fetch_networks(settings: Settings) -> tuple[Network, ...]:
    try:
        return parse_networks(settings.fetch.allow_networks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def enhancer_from(settings: Settings) -> PromptEnhancer:
    conf = settings.enhance
    if not conf.llm_url:
        return PromptEnhancer()
    return PromptEnhancer(LlmEnhancer(conf.llm_url, conf.llm_model, conf.llm_api_key, conf.timeout))


def review_from(settings: Settings) -> ContentReview:
    moderation = settings.moderation
    return build_review(moderation.term_files, moderation.default_list, moderation.classifier)


def build_service(settings: Settings, clock: Clock, keys: Mapping[str, str]) -> tuple[Starlette, TaskStore, Results]:
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts)
    storage = storage_from(settings, clock)
    actions = Actions(
        store,
        registry_from(settings),
        storage,
        clock,
        Limits(
            max_prompt_chars=settings.api.max_prompt_chars,
            url_ttl=settings.storage.url_ttl,
            max_active_tasks_per_key=settings.api.max_active_tasks_per_key,
            fetch_allow_networks=fetch_networks(settings),
        ),
        review_from(settings),
        log_prompts=settings.moderation.log_prompts,
        enhancer=enhancer_from(settings),
    )
    limiter = RateLimiter(settings.api.rate_limit, settings.api.rate_burst, clock)
    local = storage.own if isinstance(storage.own, LocalStorage) else None  # served by the API itself
    app = build_app(actions, keys, limiter, clock, settings.api.timestamp_window, local, settings.api.body_timeout)
    return app, store, storage


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
    app, store, storage = build_service(settings, clock, keys)

    stop = threading.Event()
    sweeper = Sweeper(store, storage, clock, settings.storage.url_ttl, settings.storage.task_retention)
    threading.Thread(target=sweeper.run, args=(stop, settings.storage.sweep_interval), daemon=True).start()
    supervisor = _WorkerSupervisor(settings, config_file) if with_worker else None
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


class _WorkerSupervisor:
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


def _stop_when_orphaned(parent_pid: int, worker: Worker) -> None:
    while not worker.stopping:
        if os.getppid() != parent_pid:
            log.warning("the serve process %d is gone; stopping", parent_pid)
            worker.request_stop()
            return
        time.sleep(1.0)


def run_worker(settings: Settings, parent_pid: int | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT; a second signal exits at once.

    On the first signal the worker stops claiming and gives its running task
    ``worker.shutdown_grace`` seconds, then interrupts it at the next step and hands it back.
    With ``parent_pid`` (set by ``serve``), the worker also stops when that process is gone,
    even if it was killed with SIGKILL and could not tell its child.
    """
    from aigc_image.engines.diffusers_engine import DiffusersEngine

    clock = SystemClock()
    if settings.worker.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.worker.torch_threads)
    registry = registry_from(settings)
    engine = DiffusersEngine(settings.worker.device, settings.models.allow_download, settings.worker.max_loaded_models)
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts)
    worker = Worker(
        store,
        engine,
        registry,
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
        fetcher=Fetcher(fetch_networks(settings), settings.fetch.max_bytes, settings.fetch.timeout),
        max_reference_pixels=settings.fetch.max_pixels,
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
        for name in filter(None, (n.strip() for n in settings.worker.preload.split(","))):
            model, _, version = name.partition(":")
            started = time.monotonic()
            engine.pipeline(registry.resolve(model, version or None))
            log.info("preloaded %s in %.1f s", name, time.monotonic() - started)
        worker.run()
    finally:
        with contextlib.suppress(Exception):
            store.close()
