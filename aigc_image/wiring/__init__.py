"""The composition root: builds the service's parts from Settings. No logic of its own beyond
choosing which implementation a setting names.

The parts both processes use are here; ``wiring.api`` assembles the API (and alone imports the
HTTP layer), ``wiring.worker`` a worker, so that worker processes never load Starlette or protocol/.
"""

from __future__ import annotations

from collections.abc import Callable

from aigc_image import keys as keyfiles
from aigc_image.catalog import Catalog, ModelEntry, ModelLabel, load_catalog
from aigc_image.clock import Clock
from aigc_image.config import ConfigError, Settings, StorageBackend
from aigc_image.enhance import LlmEnhancer, PromptEnhancer
from aigc_image.errors import UnknownModel
from aigc_image.hardware import Hardware, default_for
from aigc_image.moderation.review import ContentReview, build_review
from aigc_image.results.base import ResultStorage
from aigc_image.results.buckets import Results
from aigc_image.results.local import LocalStorage
from aigc_image.results.s3 import S3Storage, s3_client
from aigc_image.store import Scheduling


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


def preloaded(settings: Settings, catalog: Catalog) -> list[ModelEntry]:
    """The models of ``worker.preload``; one the catalogue does not have (a typo) is a ConfigError,
    so that a worker (or ``serve``) refuses to start instead of only logging it."""
    entries = []
    for label in settings.worker.preload:
        try:
            entries.append(catalog.lookup(ModelLabel.parse(label)))
        except (UnknownModel, ValueError) as exc:
            raise ConfigError(f"worker.preload: {label!r} is not in the model catalogue: {exc}") from None
    return entries


def storage_from(settings: Settings, clock: Clock) -> Results:
    """The service's own storage (local disk or an S3 bucket), and StoreCosParam buckets if configured."""
    conf = settings.storage
    own: ResultStorage
    if conf.backend is StorageBackend.S3:  # config.py has checked that a bucket is named
        client = s3_client(
            conf.s3_endpoint, conf.s3_region, conf.s3_access_key_id, conf.s3_secret_access_key, conf.s3_addressing_style
        )
        own = S3Storage(client, conf.s3_bucket, clock, conf.s3_prefix)
    else:
        own = LocalStorage(
            settings.data_dir / "results", settings.resolved_public_url, keyfiles.url_signing_key(settings)
        )

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


def key_weights_from(settings: Settings) -> Callable[[str], float]:
    """Each key's weight as the settings and keys.toml give it now (serve's KeyRing follows the file)."""
    weights = keyfiles.key_weights(settings)
    return lambda secret_id: weights.get(secret_id, 1.0)
