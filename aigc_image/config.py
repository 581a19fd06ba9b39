"""Typed settings: a TOML file plus ``AIGC_IMAGE_*`` environment variables.

This is the only module that reads the environment. Precedence, lowest first:
defaults, the TOML file, the environment, command-line flags (applied by the CLI
through ``Settings.with_overrides``).

Every top-level key ``k`` is also ``AIGC_IMAGE_K``; every key ``k`` of section ``[s]``
is also ``AIGC_IMAGE_S_K``. Each field documents itself in its ``doc`` metadata and
``docs/configuration.md`` must mention every one (checked by ``tests/test_docs.py``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "AIGC_IMAGE_"


class ConfigError(Exception):
    """The configuration file or environment holds an invalid value."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class KeyPair:
    secret_id: str
    secret_key: str


@dataclass(frozen=True)
class ApiSettings:
    host: str = field(default="127.0.0.1", metadata=_doc("Address `serve` listens on."))
    port: int = field(default=8000, metadata=_doc("Port `serve` listens on."))
    rate_limit: float = field(
        default=20.0,
        metadata=_doc("Requests per second allowed per SecretId and action (0 disables the limit)."),
    )
    rate_burst: int = field(
        default=20, metadata=_doc("Token-bucket size: requests a key may send at once before being limited.")
    )
    timestamp_window: int = field(
        default=300, metadata=_doc("Seconds a signed request's timestamp may differ from server time.")
    )
    max_active_tasks_per_key: int = field(
        default=100,
        metadata=_doc("Tasks one SecretId may have waiting or running at once (0 = no limit)."),
    )
    max_header_bytes: int = field(
        default=64 * 1024,
        metadata=_doc(
            "Largest request head (request line and headers) read, in bytes; larger heads get HTTP 431. "
            "Above the 32 KB GET limit, so oversized GETs still get a `RequestSizeLimitExceeded` envelope."
        ),
    )
    header_timeout: float = field(
        default=10.0, metadata=_doc("Seconds a client has to send a request's head once it starts or connects.")
    )
    body_timeout: float = field(default=30.0, metadata=_doc("Seconds a client has to send a request's whole body."))
    max_prompt_chars: int = field(
        default=1000, metadata=_doc("Longest `Prompt` / `NegativePrompt` accepted, in characters.")
    )
    allow_unsigned_payload: bool = field(
        default=False,
        metadata=_doc(
            "Accept TC3 requests signed with `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` (the SDKs' `unsignedPayload` "
            "option), whose signature does not cover the body (docs/security.md)."
        ),
    )


@dataclass(frozen=True)
class WorkerSettings:
    poll_interval: float = field(
        default=2.0,
        metadata=_doc("Seconds an idle worker waits before re-checking the store when no wake-up arrives."),
    )
    lease_seconds: int = field(
        default=30,
        metadata=_doc(
            "How long a claimed task stays leased to its worker without a heartbeat before another may claim it "
            "(heartbeats come every third of it, from a timer)."
        ),
    )
    task_timeout: float = field(
        default=1800.0,
        metadata=_doc("Longest a task's generation may take, in seconds; past it the task ends FAIL (0 = no limit)."),
    )
    max_attempts: int = field(
        default=3, metadata=_doc("Attempts a task gets (transient errors, stalled workers) before it ends FAIL.")
    )
    retry_base_delay: float = field(
        default=2.0, metadata=_doc("Seconds before the first retry after a transient error; doubles each attempt.")
    )
    retry_max_delay: float = field(default=300.0, metadata=_doc("Longest wait between two attempts, in seconds."))
    shutdown_grace: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds a stopping worker lets its running task finish before interrupting it and handing it back."
        ),
    )
    device: str = field(
        default="auto",
        metadata=_doc("Torch device for pipelines: `auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:N`."),
    )
    torch_threads: int = field(
        default=0, metadata=_doc("CPU threads torch may use in the worker (0 = torch's default).")
    )
    max_loaded_models: int = field(
        default=2, metadata=_doc("Pipelines kept loaded at once per worker; the least recently used is unloaded.")
    )
    preload: str = field(
        default="",
        metadata=_doc("Comma-separated `Name` or `Name:Version` models to load when the worker starts."),
    )


@dataclass(frozen=True)
class StorageSettings:
    url_ttl: int = field(
        default=12 * 3600, metadata=_doc("Seconds an image URL stays valid; the file is deleted after that.")
    )
    task_retention: int = field(
        default=7 * 24 * 3600,
        metadata=_doc("Seconds a finished task's record is kept; after that DescribeAigcImageTask no longer finds it."),
    )
    sweep_interval: float = field(default=60.0, metadata=_doc("Seconds between sweeps that delete expired images."))
    url_signing_key: str = field(
        default="",
        metadata=_doc("Secret for signing image URLs; generated into the data dir when empty."),
    )
    backend: str = field(
        default="local",
        metadata=_doc(
            "Where images are kept: `local` (the data dir, served by the API) or `s3` (a bucket; presigned URLs)."
        ),
    )
    s3_endpoint: str = field(
        default="", metadata=_doc("S3 endpoint URL, e.g. `https://cos.ap-guangzhou.myqcloud.com`; empty: AWS.")
    )
    s3_region: str = field(default="us-east-1", metadata=_doc("Region of the S3 bucket."))
    s3_bucket: str = field(default="", metadata=_doc("Bucket for images when `backend = s3`."))
    s3_prefix: str = field(default="", metadata=_doc("Key prefix for images in that bucket, e.g. `aigc/`."))
    s3_access_key_id: str = field(
        default="", metadata=_doc("Access key for the bucket; empty: boto3's usual sources (environment, role).")
    )
    s3_secret_access_key: str = field(default="", metadata=_doc("Secret key for the bucket."))
    s3_addressing_style: str = field(
        default="auto", metadata=_doc("`auto`, `path` or `virtual` (bucket in the host name, as COS requires).")
    )
    cos_endpoint: str = field(
        default="https://cos.{region}.myqcloud.com",
        metadata=_doc("Endpoint of a `StoreCosParam` bucket; `{region}` is its `CosBucketRegion`."),
    )
    cos_secret_id: str = field(
        default="",
        metadata=_doc("Key used to write into `StoreCosParam` buckets; empty: `StoreCosParam` is refused."),
    )
    cos_secret_key: str = field(default="", metadata=_doc("Secret of that key."))
    cos_addressing_style: str = field(
        default="virtual", metadata=_doc("`virtual` (COS), `path` (most other S3 servers) or `auto`.")
    )


@dataclass(frozen=True)
class FetchSettings:
    allow_networks: str = field(
        default="",
        metadata=_doc(
            "Comma-separated CIDR networks reference images may also come from, e.g. `10.20.0.0/16`; "
            "by default only public internet addresses are fetched."
        ),
    )
    max_bytes: int = field(default=20 * 1024 * 1024, metadata=_doc("Largest reference image download, in bytes."))
    max_pixels: int = field(
        default=4096 * 4096, metadata=_doc("Largest reference image, in pixels (checked before decoding).")
    )
    timeout: float = field(default=30.0, metadata=_doc("Seconds one reference image download may take in all."))


@dataclass(frozen=True)
class EnhanceSettings:
    llm_url: str = field(
        default="",
        metadata=_doc(
            "Base URL of an OpenAI-compatible API (`…/v1`) that rewrites prompts for `EnhancePrompt`; "
            "empty: the built-in rewriter."
        ),
    )
    llm_model: str = field(default="", metadata=_doc("Model name sent to that API."))
    llm_api_key: str = field(default="", metadata=_doc("Bearer token for that API, if it needs one."))
    timeout: float = field(
        default=10.0, metadata=_doc("Seconds to wait for the LLM before using the built-in rewriter instead.")
    )


@dataclass(frozen=True)
class ModelSettings:
    registry_file: str = field(
        default="",
        metadata=_doc("Extra model registry (TOML) whose entries add to or replace the built-in ones."),
    )
    default_model: str = field(
        default="", metadata=_doc("`ModelName` used when a request omits it (overrides the registry's default).")
    )
    allow_download: bool = field(
        default=True,
        metadata=_doc("Let the worker download missing weights from the Hugging Face Hub (false = local cache only)."),
    )


@dataclass(frozen=True)
class ModerationSettings:
    term_files: str = field(
        default="",
        metadata=_doc("Comma-separated term lists (UTF-8, one term a line, `#` comments) refused in prompts."),
    )
    default_list: bool = field(
        default=True, metadata=_doc("Also use the small term list shipped with aigc-image (docs/security.md).")
    )
    classifier: str = field(
        default="",
        metadata=_doc("`module:callable` asked about every prompt and output image after the term lists."),
    )
    log_prompts: bool = field(
        default=False, metadata=_doc("Write the full refused prompt into the audit log (off: only which list matched).")
    )


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(
        default=Path("./aigc-data"), metadata=_doc("Directory for the database, keys and result images.")
    )
    database_url: str = field(
        default="",
        metadata=_doc(
            "Task store: `sqlite:///PATH` (one host) or `postgresql://USER:PASSWORD@HOST:PORT/DB` (several hosts); "
            "empty means `sqlite:///<data_dir>/aigc-image.db`."
        ),
    )
    public_url: str = field(
        default="",
        metadata=_doc(
            "Base of returned image URLs, e.g. `https://images.example.com`; empty means `http://<host>:<port>`."
        ),
    )
    content_producer: str = field(
        default="aigc-image",
        metadata=_doc(
            "`ContentProducer` in every image's implicit AI-generated label (GB 45438-2025): "
            "your service's name or filing number."
        ),
    )
    secret_id: str = field(default="", metadata=_doc("SecretId of one API key pair (with `secret_key`)."))
    secret_key: str = field(default="", metadata=_doc("SecretKey of that key pair."))
    keys: tuple[KeyPair, ...] = field(
        default=(), metadata=_doc("`[[keys]]` tables with `secret_id` and `secret_key` (file only).")
    )
    api: ApiSettings = field(default_factory=ApiSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aigc-image.db'}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.api.host}:{self.api.port}").rstrip("/")

    def configured_keys(self) -> tuple[KeyPair, ...]:
        """Key pairs from the environment pair and the file's ``[[keys]]`` tables."""
        pairs = list(self.keys)
        if self.secret_id or self.secret_key:
            if not (self.secret_id and self.secret_key):
                raise ConfigError("AIGC_IMAGE_SECRET_ID and AIGC_IMAGE_SECRET_KEY must be set together")
            pairs.insert(0, KeyPair(self.secret_id, self.secret_key))
        return tuple(pairs)

    def with_overrides(self, **values: Any) -> Settings:
        """Apply command-line overrides; keys are ``name`` or ``section.name``; None is skipped."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in values.items():
            if value is None:
                continue
            section, _, name = dotted.rpartition(".")
            if section:
                sections.setdefault(section, {})[name] = value
            else:
                top[name] = value
        for section, changes in sections.items():
            top[section] = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **top)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from an optional TOML file and the environment."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    settings: Settings = _build(Settings, raw, env, section=None)
    return settings


def iter_setting_docs() -> Iterator[tuple[str, str, str]]:
    """Yield (TOML key, environment variable or "" for file-only keys, doc) for every setting."""
    for f in dataclasses.fields(Settings):
        if _is_section(f):
            for sub in dataclasses.fields(_field_type(Settings, f)):
                yield f"{f.name}.{sub.name}", _env_name(f.name, sub.name), sub.metadata["doc"]
        elif f.name == "keys":
            yield f.name, "", f.metadata["doc"]
        else:
            yield f.name, _env_name(None, f.name), f.metadata["doc"]


def _env_name(section: str | None, name: str) -> str:
    return (ENV_PREFIX + (f"{section}_{name}" if section else name)).upper()


def _field_type(cls: type, f: dataclasses.Field[Any]) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _is_section(f: dataclasses.Field[Any]) -> bool:
    return f.default_factory is not dataclasses.MISSING and f.name != "keys"


def _build(cls: Any, raw: Mapping[str, Any], env: Mapping[str, str], section: str | None) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {where}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _field_type(cls, f)
        if section is None and _is_section(f):
            sub = raw.get(f.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"[{f.name}] must be a table")
            values[f.name] = _build(hint, sub, env, section=f.name)
        elif f.name == "keys":
            values[f.name] = _parse_keys(raw.get("keys", []))
        else:
            env_value = env.get(_env_name(section, f.name))
            if env_value is not None:
                values[f.name] = _coerce(env_value, hint, _env_name(section, f.name))
            elif f.name in raw:
                values[f.name] = _coerce(raw[f.name], hint, f.name)
    return cls(**values)


def _parse_keys(items: Any) -> tuple[KeyPair, ...]:
    if not isinstance(items, list):
        raise ConfigError("keys must be an array of [[keys]] tables")
    pairs = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"secret_id", "secret_key"}:
            raise ConfigError("each [[keys]] table needs exactly secret_id and secret_key")
        if not all(isinstance(v, str) and v for v in item.values()):
            raise ConfigError("[[keys]] secret_id and secret_key must be non-empty strings")
        pairs.append(KeyPair(item["secret_id"], item["secret_key"]))
    return tuple(pairs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    if isinstance(hint, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if hint is int and isinstance(value, float):
            raise ValueError(f"not an integer: {value!r}")
        if hint in (int, float) and isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        if hint is str and not isinstance(value, str):
            raise ValueError(f"not a string: {value!r}")
        return hint(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {name}: {exc}") from exc
