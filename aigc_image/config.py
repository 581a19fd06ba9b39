"""Typed settings: a TOML file plus ``AIGC_IMAGE_*`` environment variables, checked at load.

This is the only module that reads the environment. Precedence, lowest first: defaults, the
TOML file, the environment, command-line flags (applied by the CLI through
``Settings.with_overrides``).

Every top-level key ``k`` is also ``AIGC_IMAGE_K``; every key ``k`` of section ``[s]`` is also
``AIGC_IMAGE_S_K``. Values are validated by pydantic against the types below (enums, bounds,
lists; a list given in the environment is comma-separated), then across fields (a bucket for the
S3 backend, both halves of a key pair). Anything wrong stops the program with a message naming
the full key and, when it came from there, the environment variable: an unknown key in the file,
an unknown ``AIGC_IMAGE_*`` variable (a typo), a value of the wrong type. (The models named by
``worker.preload`` are checked against the model catalogue where a worker is assembled, at start:
wiring/.)
Each field documents itself (``description``); docs/configuration.md's table is printed from them
(scripts/settings_table.py) and a test keeps the two equal.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from aigc_image.bounded import InputRefused, ParseLimits, check_structure
from aigc_image.errors import Reason, ServiceError

ENV_PREFIX = "AIGC_IMAGE_"
# The settings file and the model registry: written by the operator, still parsed within limits.
FILE_LIMITS = ParseLimits(max_depth=16, max_number_digits=32, max_string_chars=64 * 1024)
MAX_FILE_BYTES = 4 * 1024 * 1024


class ConfigError(ServiceError):
    """The configuration file or environment holds an invalid value."""

    permanent = True
    reason = Reason.CONFIG


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file (the settings, a model registry) within FILE_LIMITS; anything wrong with it,
    its limits included, is a ConfigError naming ``what`` and the file."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"cannot read {what} {path}: it is larger than {MAX_FILE_BYTES} bytes")
        document = tomllib.loads(data.decode("utf-8"))
        check_structure(document, FILE_LIMITS, "it")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, InputRefused) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"cannot read {what} {path}: it is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts (4,300 digits)
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    return document


def _listed(value: Any) -> Any:
    """A list setting may also be one comma-separated string (as environment variables are)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_device(device: str) -> str:
    """``device`` if it names one (auto, cpu, cuda, cuda:N), else ValueError saying what would."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
        raise ValueError(f"{device!r} is not a device: use auto, cpu, cuda or cuda:N")
    return device


def _devices(value: tuple[str, ...]) -> tuple[str, ...]:
    for device in value:
        check_device(device)
    if "auto" in value and len(value) > 1:
        raise ValueError("auto stands alone: it means every visible GPU, or the CPU")
    if not value:
        raise ValueError("name at least one device")
    return value


def _database_url(url: str) -> str:
    """Empty (SQLite in the data dir), ``sqlite:///PATH`` or ``postgresql://...``."""
    if url and not (
        (url.startswith("sqlite:///") and len(url) > len("sqlite:///"))
        or url.startswith(("postgresql://", "postgres://"))
    ):
        scheme = url.split("://")[0] + "://" if "://" in url else repr(url)
        raise ValueError(f"{scheme}... is not a task store: use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB")
    return url


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_listed)]
Devices = Annotated[tuple[str, ...], BeforeValidator(_listed), AfterValidator(_devices)]
Networks = Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], BeforeValidator(_listed)]


class StorageBackend(enum.StrEnum):
    LOCAL = "local"
    S3 = "s3"


class AddressingStyle(enum.StrEnum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class SchedulingPolicy(enum.StrEnum):
    FAIR = "fair"
    FIFO = "fifo"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class KeyPair(_Section):
    secret_id: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0, le=1000)  # its share of the workers under contention (docs/operations.md)


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `serve` listens on.")
    rate_limit: float = Field(
        20.0, ge=0, description="Requests per second allowed per SecretId and action (0 disables the limit)."
    )
    rate_burst: int = Field(
        20, ge=1, description="Token-bucket size: requests a key may send at once before being limited."
    )
    timestamp_window: int = Field(
        300, ge=1, description="Seconds a signed request's timestamp may differ from server time."
    )
    max_active_tasks_per_key: int = Field(
        100, ge=0, description="Tasks one SecretId may have waiting or running at once (0 = no limit)."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) read, in bytes; larger heads get HTTP 431. "
        "Above the 32 KB GET limit, so oversized GETs still get a `RequestSizeLimitExceeded` envelope.",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's head once it starts or connects."
    )
    body_timeout: float = Field(30.0, gt=0, description="Seconds a client has to send a request's whole body.")
    max_prompt_chars: int = Field(
        1000, ge=1, description="Longest `Prompt` / `NegativePrompt` accepted, in characters."
    )
    allow_unsigned_payload: bool = Field(
        False,
        description="Accept TC3 requests signed with `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` (the SDKs' "
        "`unsignedPayload` option), whose signature does not cover the body (docs/security.md).",
    )
    metrics_networks: Networks = Field(
        tuple(
            ipaddress.ip_network(block)
            for block in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
        ),
        description="Networks whose clients may read `GET /metrics` (Prometheus; no key needed, no secrets or "
        "prompts in it): loopback and private addresses by default; empty turns `/metrics` off.",
    )
    openai_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a `/v1/images/*` or `/sdapi/v1/*2img` call waits for its task to finish before "
        "answering 504 with the TaskId (and `x-should-retry: false`); the task goes on.",
    )
    max_json_depth: int = Field(
        32, ge=2, le=200, description="Deepest nesting of objects and arrays accepted in any JSON a client sends."
    )
    max_number_digits: int = Field(
        32, ge=10, le=4000, description="Most digits of one number accepted in any JSON a client sends."
    )
    max_string_chars: int = Field(
        16 * 1024,
        ge=256,
        description="Longest string or object key accepted in any request, in characters (images sent inline "
        "have their own limit, `fetch.max_bytes`); at least `api.max_prompt_chars`.",
    )
    max_image_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest body of a request that carries images (`/v1/images/edits`, `/sdapi/v1/img2img`), in "
        "bytes: checked from Content-Length, then counted while it streams in; HTTP 413 and the connection closed.",
    )
    idempotency_window: float = Field(
        24 * 3600.0,
        ge=0,
        description="Seconds a `/v1` or `/sdapi` create sent with an `Idempotency-Key` header finds its task again: "
        "the same key, body and header within it join that task instead of making another (0: off).",
    )
    fingerprint_window: float = Field(
        60.0,
        ge=0,
        description="Seconds a `/v1` create without `Idempotency-Key` finds its task again: the same key and body "
        "within it (a client's retry) join that task instead of making another (0: off).",
    )

    @model_validator(mode="after")
    def _strings_hold_prompts(self) -> ApiSettings:
        if self.max_string_chars < self.max_prompt_chars:
            raise ValueError("api.max_string_chars must be at least api.max_prompt_chars")
        return self

    @property
    def parse_limits(self) -> ParseLimits:
        return ParseLimits(self.max_json_depth, self.max_number_digits, self.max_string_chars)


class WorkerSettings(_Section):
    poll_interval: float = Field(
        2.0, gt=0, description="Seconds an idle worker waits before re-checking the store when no wake-up arrives."
    )
    lease_seconds: int = Field(
        30,
        ge=1,
        description="How long a claimed task stays leased to its worker without a heartbeat before another may "
        "claim it (heartbeats come every third of it, from a timer).",
    )
    task_timeout: float = Field(
        1800.0,
        ge=0,
        description="Longest a task's generation may take, in seconds; past it the task ends FAIL (0 = no limit).",
    )
    max_attempts: int = Field(
        3, ge=1, description="Attempts a task gets (transient errors, stalled workers) before it ends FAIL."
    )
    retry_base_delay: float = Field(
        2.0, ge=0, description="Seconds before the first retry after a transient error; doubles each attempt."
    )
    retry_max_delay: float = Field(300.0, ge=0, description="Longest wait between two attempts, in seconds.")
    shutdown_grace: float = Field(
        30.0,
        ge=0,
        description="Seconds a stopping worker lets its running task finish before interrupting it and handing it "
        "back.",
    )
    devices: Devices = Field(
        ("auto",),
        description="Devices `serve` runs workers on, one worker process each: `auto` (every GPU PyTorch sees, "
        "else the CPU) or a list of `cpu`, `cuda:N` (`cpu,cpu`: two CPU workers). A standalone `aigc-image "
        "worker` uses the first unless `--device` names one.",
    )
    torch_threads: int = Field(0, ge=0, description="CPU threads torch may use in the worker (0 = torch's default).")
    max_batch: int = Field(
        8,
        ge=1,
        description="Most waiting tasks that fit one pipeline call (same model, size, steps, guidance and "
        "kind) a worker claims and runs together; each model's `max_batch` caps it too. 1 turns batching off.",
    )
    batch_wait_ms: int = Field(
        0,
        ge=0,
        description="Milliseconds a part-filled batch waits for more tasks that fit it (0: never wait, "
        "run what is waiting).",
    )
    max_loaded_models: int = Field(
        2, ge=1, description="Pipelines kept loaded at once per worker; the least recently used is unloaded."
    )
    preload: Names = Field(
        (),
        description="Models to load when the worker starts: `Name` or `Name:Version` (a list; comma-separated "
        "in the environment).",
    )
    scheduling: SchedulingPolicy = Field(
        SchedulingPolicy.FAIR,
        description="Order in which workers claim waiting tasks: `fair` (fair shares across keys by their "
        "`weight`, oldest first within a key, model affinity; docs/operations.md) or `fifo` (oldest task first, "
        "whoever sent it). The API estimates queue positions by it too.",
    )
    affinity_wait: float = Field(
        10.0,
        ge=0,
        description="Seconds a task for a model its worker has not loaded may be passed over by tasks for models "
        "it has (fair scheduling only); 0 turns model affinity off.",
    )


class StorageSettings(_Section):
    url_ttl: int = Field(
        12 * 3600, ge=1, description="Seconds an image URL stays valid; the file is deleted after that."
    )
    task_retention: int = Field(
        7 * 24 * 3600,
        ge=1,
        description="Seconds a finished task's record is kept; after that DescribeAigcImageTask no longer finds it.",
    )
    sweep_interval: float = Field(60.0, gt=0, description="Seconds between sweeps that delete expired images.")
    url_signing_key: str = Field(
        "", description="Secret for signing image URLs; generated into the data dir when empty."
    )
    backend: StorageBackend = Field(
        StorageBackend.LOCAL,
        description="Where images are kept: `local` (the data dir, served by the API) or `s3` (a bucket; presigned "
        "URLs).",
    )
    s3_endpoint: str = Field(
        "", description="S3 endpoint URL, e.g. `https://cos.ap-guangzhou.myqcloud.com`; empty: AWS."
    )
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    s3_bucket: str = Field("", description="Bucket for images when `backend = s3`.")
    s3_prefix: str = Field("", description="Key prefix for images in that bucket, e.g. `aigc/`.")
    s3_access_key_id: str = Field(
        "", description="Access key for the bucket; empty: boto3's usual sources (environment, role)."
    )
    s3_secret_access_key: str = Field("", description="Secret key for the bucket.")
    s3_addressing_style: AddressingStyle = Field(
        AddressingStyle.AUTO, description="`auto`, `path` or `virtual` (bucket in the host name, as COS requires)."
    )
    cos_endpoint: str = Field(
        "https://cos.{region}.myqcloud.com",
        description="Endpoint of a `StoreCosParam` bucket; `{region}` is its `CosBucketRegion`.",
    )
    cos_secret_id: str = Field(
        "", description="Key used to write into `StoreCosParam` buckets; empty: `StoreCosParam` is refused."
    )
    cos_secret_key: str = Field("", description="Secret of that key.")
    cos_addressing_style: AddressingStyle = Field(
        AddressingStyle.VIRTUAL, description="`virtual` (COS), `path` (most other S3 servers) or `auto`."
    )


class FetchSettings(_Section):
    allow_networks: Networks = Field(
        (),
        description="CIDR networks reference images may also come from, e.g. `10.20.0.0/16` (a list; "
        "comma-separated in the environment); by default only public internet addresses are fetched.",
    )
    max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest reference image download, in bytes.")
    max_pixels: int = Field(
        4096 * 4096, ge=1, description="Largest reference image, in pixels (checked before decoding)."
    )
    timeout: float = Field(
        30.0, gt=0, description="Seconds one reference image download may take in all (connect, head, body, redirects)."
    )
    max_total_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds a task's reference images may take to download over all its attempts; past it the "
        "task ends FAIL (`reference_unreachable`).",
    )
    workers: int = Field(
        16,
        ge=1,
        description="Tasks whose reference images a worker fetches at once, on threads of their own, before they "
        "hold its device.",
    )
    per_key: int = Field(
        4,
        ge=1,
        description="Of those, most tasks of one key (so one key's slow image server cannot take them all); a "
        "batch of tasks with reference images holds at most this many.",
    )


class EnhanceSettings(_Section):
    llm_url: str = Field(
        "",
        description="Base URL of an OpenAI-compatible API (`…/v1`) that rewrites prompts for `EnhancePrompt`; "
        "empty: the built-in rewriter.",
    )
    llm_model: str = Field("", description="Model name sent to that API.")
    llm_api_key: str = Field("", description="Bearer token for that API, if it needs one.")
    timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for the LLM before using the built-in rewriter instead."
    )


class ModelSettings(_Section):
    registry_file: str = Field(
        "", description="Extra model registry (TOML) whose entries add to or change the built-in ones."
    )
    default_model: str = Field(
        "",
        description="`ModelName` (or `ModelName:ModelVersion`) used when a request omits it, the same for every "
        "process of the deployment (recorded in its store); empty: the first worker chooses the best built-in "
        "model for its hardware (docs/models.md).",
    )
    allow_download: bool = Field(
        True,
        description="Let the worker download missing weights from the Hugging Face Hub (false = local cache only).",
    )


class ModerationSettings(_Section):
    term_files: Names = Field(
        (),
        description="Term lists (UTF-8, one term a line, `#` comments) refused in prompts (a list; "
        "comma-separated in the environment).",
    )
    default_list: bool = Field(
        True, description="Also use the small term list shipped with aigc-image (docs/security.md)."
    )
    classifier: str = Field(
        "", description="`module:callable` asked about every prompt and output image after the term lists."
    )
    log_prompts: bool = Field(
        False, description="Write the full refused prompt into the audit log (off: only which list matched)."
    )


class LogSettings(_Section):
    format: LogFormat = Field(
        LogFormat.TEXT, description="`text` (a line per event) or `json` (one JSON object per line)."
    )
    level: Annotated[LogLevel, BeforeValidator(_upper)] = Field(
        LogLevel.INFO, description="Lowest level logged: `DEBUG`, `INFO`, `WARNING` or `ERROR`."
    )


class Settings(_Section):
    data_dir: Path = Field(Path("./aigc-data"), description="Directory for the database, keys and result images.")
    database_url: Annotated[str, AfterValidator(_database_url)] = Field(
        "",
        description="Task store: `sqlite:///PATH` (one host) or `postgresql://USER:PASSWORD@HOST:PORT/DB` (several "
        "hosts); empty means `sqlite:///<data_dir>/aigc-image.db`.",
    )
    public_url: str = Field(
        "",
        description="Base of returned image URLs, e.g. `https://images.example.com`; empty means "
        "`http://<host>:<port>`.",
    )
    content_producer: str = Field(
        "aigc-image",
        description="`ContentProducer` in every image's implicit AI-generated label (GB 45438-2025): your service's "
        "name or filing number.",
    )
    secret_id: str = Field("", description="SecretId of one API key pair (with `secret_key`).")
    secret_key: str = Field("", description="SecretKey of that key pair.")
    keys: tuple[KeyPair, ...] = Field(
        (),
        description="`[[keys]]` tables with `secret_id`, `secret_key` and optionally `weight` (its share under "
        "contention, default 1) (file only).",
    )
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    storage: StorageSettings = StorageSettings()
    fetch: FetchSettings = FetchSettings()
    enhance: EnhanceSettings = EnhanceSettings()
    models: ModelSettings = ModelSettings()
    moderation: ModerationSettings = ModerationSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _fields_agree(self) -> Settings:
        """What no single field can check: a bucket for the S3 backend, both halves of each key pair."""
        problems = []
        if self.storage.backend is StorageBackend.S3 and not self.storage.s3_bucket:
            problems.append(f"storage.backend = s3 needs {_named('storage.s3_bucket')}")
        for first, second in _PAIRS:
            set_first, set_second = bool(self._value(first)), bool(self._value(second))
            if set_first != set_second:
                missing = second if set_first else first
                problems.append(f"{_named(first)} and {_named(second)} go together: {_named(missing)} is not set")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _value(self, key: str) -> Any:
        section, _, name = key.rpartition(".")
        return getattr(getattr(self, section) if section else self, name)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aigc-image.db'}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.api.host}:{self.api.port}").rstrip("/")

    def configured_keys(self) -> tuple[KeyPair, ...]:
        """Key pairs from the environment pair and the file's ``[[keys]]`` tables."""
        pairs = list(self.keys)
        if self.secret_id:  # with its secret_key: checked at load
            pairs.insert(0, KeyPair(secret_id=self.secret_id, secret_key=self.secret_key))
        return tuple(pairs)

    def with_overrides(self, **values: Any) -> Settings:
        """Apply command-line overrides; keys are ``name`` or ``section.name``; None is skipped."""
        raw = self.model_dump()
        for dotted, value in values.items():
            if value is None:
                continue
            section, _, name = dotted.rpartition(".")
            (raw[section] if section else raw)[name] = value
        return _validated(raw, {})


_PAIRS = [  # settings that make sense only together
    ("secret_id", "secret_key"),
    ("storage.s3_access_key_id", "storage.s3_secret_access_key"),
    ("storage.cos_secret_id", "storage.cos_secret_key"),
]


def _named(key: str) -> str:
    """A setting as the messages name it: its key and its environment variable."""
    return f"{key} ({ENV_PREFIX}{key.replace('.', '_').upper()})"


SECTIONS = {name: info.annotation for name, info in Settings.model_fields.items() if name not in ("keys",)
            if isinstance(info.annotation, type) and issubclass(info.annotation, _Section)}  # fmt: skip


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from an optional TOML file and the environment."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_toml(path, "config file")
    for section in SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    known = {env_name: key for key, env_name, _ in iter_setting_docs() if env_name}
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(unknown)} (docs/configuration.md)")
    origins: dict[str, str] = {}
    for env_name, key in known.items():
        if env_name in env:
            section, _, name = key.rpartition(".")
            (raw.setdefault(section, {}) if section else raw)[name] = env[env_name]
            origins[key] = env_name
    return _validated(raw, origins)


def _validated(raw: dict[str, Any], origins: Mapping[str, str]) -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            if not location:  # a check across fields (Settings._fields_agree): its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            depth = 2 if location[0] in SECTIONS else 1  # "api.port", "data_dir"
            key = ".".join(location[:depth])
            detail = ".".join(location[depth:])  # e.g. "0.secret_key" of keys, or a list entry
            where = f"{origins[key]} ({key})" if key in origins else ".".join(location[: depth + 2])
            value = f" (entry {detail.split('.')[0]})" if detail and key in origins else ""
            problems.append(f"{where}{value}: {error['msg']}")
        raise ConfigError("; ".join(problems)) from None


def iter_setting_docs() -> Iterator[tuple[str, str, str]]:
    """Yield (TOML key, environment variable or "" for file-only keys, doc) for every setting."""
    for name, info in Settings.model_fields.items():
        if name in SECTIONS:
            for sub, sub_info in SECTIONS[name].model_fields.items():
                yield f"{name}.{sub}", f"{ENV_PREFIX}{name}_{sub}".upper(), sub_info.description or ""
        elif name == "keys":
            yield name, "", info.description or ""
        else:
            yield name, f"{ENV_PREFIX}{name}".upper(), info.description or ""
