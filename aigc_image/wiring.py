"""The composition root: builds the service's parts from Settings. No logic of its own beyond
choosing which implementation a setting names."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.applications import Starlette

from aigc_image import keys as keyfiles
from aigc_image.catalog import Catalog, load_catalog
from aigc_image.clock import Clock
from aigc_image.config import ConfigError, Settings
from aigc_image.deployment import DefaultModel
from aigc_image.enhance import LlmEnhancer, PromptEnhancer
from aigc_image.hardware import Hardware, default_for
from aigc_image.moderation.review import ContentReview, build_review
from aigc_image.protocol.actions import Actions, Limits
from aigc_image.protocol.app import build_app
from aigc_image.protocol.ratelimit import RateLimiter
from aigc_image.results.base import ResultStorage
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.results.s3 import S3Storage, s3_client
from aigc_image.store import Scheduling, TaskStore, open_store


def catalog_from(settings: Settings, hardware: Hardware | None = None) -> tuple[Catalog, str]:
    """The model catalogue and why its default is what it is. With no default configured, the
    best model for ``hardware`` (the API's view of this host) becomes the default."""
    catalog = load_catalog(settings.models.registry_file, settings.models.default_model)
    if catalog.default_label:
        return catalog, "models.default_model" if settings.models.default_model else "the model registry file"
    if hardware is None:
        return catalog, "none configured"
    entry, reason = default_for(catalog, hardware)
    return catalog.with_default(entry.label), reason


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


def enhancer_from(settings: Settings) -> PromptEnhancer:
    conf = settings.enhance
    if not conf.llm_url:
        return PromptEnhancer()
    return PromptEnhancer(LlmEnhancer(conf.llm_url, conf.llm_model, conf.llm_api_key, conf.timeout))


def review_from(settings: Settings) -> ContentReview:
    moderation = settings.moderation
    return build_review(moderation.term_files, moderation.default_list, moderation.classifier)


def scheduling_from(settings: Settings) -> Scheduling:
    """The claim order workers follow, and the API estimates queue positions by."""
    return Scheduling(settings.worker.scheduling, settings.worker.affinity_wait)


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
    weight_of = weights or _static_weights(settings)
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
        weights=weight_of,
    )
    limiter = RateLimiter(settings.api.rate_limit, settings.api.rate_burst, clock)
    local = storage.own if isinstance(storage.own, LocalStorage) else None  # served by the API itself
    app = build_app(actions, keys, limiter, clock, settings.api, local)
    return app, store, storage


def _static_weights(settings: Settings) -> Callable[[str], float]:
    weights = keyfiles.key_weights(settings)
    return lambda secret_id: weights.get(secret_id, 1.0)
