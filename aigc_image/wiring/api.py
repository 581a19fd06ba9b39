"""The API process's assembly: the app over its store and storage (serve.py runs it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.applications import Starlette

from aigc_image.catalog import Catalog
from aigc_image.clock import Clock
from aigc_image.config import Settings
from aigc_image.deployment import DefaultModel
from aigc_image.protocol.actions import Actions, Limits
from aigc_image.protocol.app import build_app
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.store import TaskStore, open_store
from aigc_image.wiring import (
    catalog_from,
    enhancer_from,
    key_weights_from,
    review_from,
    scheduling_from,
    storage_from,
)


def build_service(
    settings: Settings,
    clock: Clock,
    keys: Mapping[str, str],
    catalog: Catalog | None = None,
    weights: Callable[[str], float] | None = None,
) -> tuple[Starlette, TaskStore, Results]:
    """The API app over its store and storage. Its default model is the one the store records for
    the deployment (deployment.py), else ``catalog``'s (default: the configured one). ``weights``: each
    key's weight (serve's KeyRing follows keys.toml; default: the settings' and keys.toml's at start)."""
    store = open_store(settings.resolved_database_url, clock, settings.worker.max_attempts, scheduling_from(settings))
    storage = storage_from(settings, clock)
    catalog = catalog or catalog_from(settings)[0]
    default_model = DefaultModel(store, catalog, clock)
    actions = Actions(
        store,
        catalog,
        storage,
        clock,
        Limits(
            max_prompt_chars=settings.api.max_prompt_chars,
            url_ttl=settings.storage.url_ttl,
            max_active_tasks_per_key=settings.api.max_active_tasks_per_key,
            fetch_allow_networks=settings.fetch.allow_networks,
            max_upload_bytes=settings.fetch.max_bytes,
            max_upload_pixels=settings.fetch.max_pixels,
            parse=settings.api.parse_limits,
        ),
        review_from(settings),
        log_prompts=settings.moderation.log_prompts,
        enhancer=enhancer_from(settings),
        current_catalog=default_model.catalog,
        weights=weights or key_weights_from(settings),
    )
    limiter = RateLimiter(settings.api.rate_limit, settings.api.rate_burst, clock)
    local = storage.own if isinstance(storage.own, LocalStorage) else None  # served by the API itself
    app = build_app(actions, keys, limiter, clock, settings.api, local)
    return app, store, storage
