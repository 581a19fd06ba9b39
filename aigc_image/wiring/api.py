"""The API process's assembly: the app over its store and storage (serve.py runs it)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette

from aigc_image.catalog import Catalog
from aigc_image.clock import Clock
from aigc_image.config import Settings
from aigc_image.protocol.actions import Actions, Limits
from aigc_image.protocol.app import build_app
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import TaskStore, open_store
from aigc_image.wiring import catalog_from, enhancer_from, review_from, storage_from


def build_service(
    settings: Settings, clock: Clock, keys: Mapping[str, str], catalog: Catalog | None = None
) -> tuple[Starlette, TaskStore, Results]:
    """The API app over its store and storage (``catalog``: default from ``catalog_from``)."""
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts)
    storage = storage_from(settings, clock)
    actions = Actions(
        store,
        catalog or catalog_from(settings)[0],
        storage,
        clock,
        Limits(
            max_prompt_chars=settings.api.max_prompt_chars,
            url_ttl=settings.storage.url_ttl,
            max_active_tasks_per_key=settings.api.max_active_tasks_per_key,
            fetch_allow_networks=settings.fetch.allow_networks,
            max_upload_bytes=settings.fetch.max_bytes,
        ),
        review_from(settings),
        log_prompts=settings.moderation.log_prompts,
        enhancer=enhancer_from(settings),
    )
    limiter = RateLimiter(settings.api.rate_limit, settings.api.rate_burst, clock)
    local = storage.own if isinstance(storage.own, LocalStorage) else None  # served by the API itself
    app = build_app(
        actions, keys, limiter, clock, settings.api.timestamp_window, local, settings.api.body_timeout,
        settings.api.allow_unsigned_payload, settings.api.metrics_networks, settings.api.openai_timeout,
    )  # fmt: skip
    return app, store, storage
