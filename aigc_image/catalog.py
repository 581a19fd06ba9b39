"""The model catalogue: which open model serves each ``ModelName``/``ModelVersion``, and what it can do.

The API validates requests against it, the worker loads models from it and the CLI lists it.
The built-in catalogue (``models.toml`` beside this file) maps the MPS model names to open
models; an operator's file (setting ``models.registry_file``) adds entries, or changes built-in
ones: an entry with the same name and version as a built-in one changes only the keys it sets.
The format is documented in docs/models.md.

When ``models.default_model`` is not set, the default is the first model (in catalogue order,
best first) that fits this host's hardware: ``default_for``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aigc_image.config import ConfigError, read_toml
from aigc_image.enhance import STYLES
from aigc_image.errors import UnknownModel
from aigc_image.hardware import Hardware
from aigc_image.media.sizes import ASPECT_RATIOS, SHORTER_SIDE, STANDARD_RESOLUTIONS

ENGINES = ("diffusers", "tiny-random")
CACHES = ("none", "first_block", "taylorseer", "mag")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# Share of a GPU's (or the RAM's) memory a model may plan to use: the rest is for the CUDA
# context, the other process on a CPU host, and fragmentation.
USABLE_MEMORY = 0.9
DEFAULT_MAX_STEPS = 100


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    engine: str
    source: str = ""  # Hugging Face repo id or local directory
    pipeline: str = "AutoPipelineForText2Image"
    dtype: str = "auto"
    variant: str = ""  # weights variant to load, e.g. "fp16" (smaller download; upcast on CPUs)
    default: bool = False  # the version used when a request names only the model
    description: str = ""
    steps: int = 30
    max_steps: int = 0  # most AdditionalParameters steps a request may ask for (0: 100, or steps if more)
    guidance_scale: float | None = None  # None: the pipeline's own default
    width: int = 1024
    height: int = 1024
    negative_prompt: bool = True
    max_output_images: int = 4
    max_batch: int = 8  # most tasks one pipeline call serves (worker.max_batch caps it too)
    max_reference_images: int = 0  # ImageInfos: 0 none, 1 image-to-image, more: multi-reference editing
    image_pipeline: str = "AutoPipelineForImage2Image"  # the pipeline class that takes ImageInfos
    image_source: str = ""  # where its own weights are; "" = it reuses every component of the model
    image_shared: tuple[str, ...] = ()  # with image_source: components taken from the loaded model instead
    reference_strength: bool = True  # whether AdditionalParameters strength applies to ImageInfos
    prompt_style: str = "natural"  # EnhancePrompt's built-in rewrite: "natural" sentences or "tags"
    panorama: bool = False  # SceneType 3d_panorama
    # ExtraParameters.AspectRatio / Resolution this model accepts (any model can: its images are
    # generated at its native size in that shape, then resized).
    aspect_ratios: tuple[str, ...] = tuple(ASPECT_RATIOS)
    resolutions: tuple[str, ...] = STANDARD_RESOLUTIONS
    size_multiple: int = 16  # generated sides are multiples of this (the VAE and transformer need it)
    # Bounds of AdditionalParameters {"size": "WxH"}; 0 pixels: no bound beyond the sides.
    size_min_side: int = 256
    size_max_side: int = 2048
    size_min_pixels: int = 0
    size_max_pixels: int = 0
    # Accelerations (docs/models.md gives each one's measured speed-up and pixel difference);
    # off by default, since each changes the pixels a little.
    compile: bool = False  # torch.compile of the denoiser's repeated blocks (regional), warmed up at load
    cache: str = "none"  # "none", "first_block", "taylorseer" or "mag": reuse of the denoiser's work between steps
    cache_options: Mapping[str, Any] = field(default_factory=dict)  # that method's diffusers config, e.g. threshold
    channels_last: bool = False  # channels-last memory layout for a UNet's convolutions
    # What running it takes, for the hardware-aware default, offloading and `aigc-image models`.
    memory_gb: float = 0.0  # GPU memory for one image at the native size, in the model's dtype
    cpu_memory_gb: float = 0.0  # RAM to run it on a CPU (float32); 0: too slow to offer on CPUs
    download_gb: float = 0.0  # size of the weights it downloads

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def accelerations(self) -> list[str]:
        """What is turned on, as `aigc-image models` shows it."""
        options = ", ".join(f"{k}={_brief(v)}" for k, v in self.cache_options.items())
        cache = [f"{self.cache}({options})" if options else self.cache] if self.cache != "none" else []
        return [name for name, on in (("compile", self.compile), ("channels_last", self.channels_last)) if on] + cache

    def fits(self, hardware: Hardware) -> bool:
        """Whether this model runs on ``hardware`` without offloading weights to the CPU."""
        needed = self.memory_gb if hardware.kind == "cuda" else self.cpu_memory_gb
        return needed > 0 and needed * 1024**3 <= USABLE_MEMORY * hardware.memory_bytes


@dataclass(frozen=True)
class Catalog:
    entries: Mapping[tuple[str, str], ModelEntry]  # in catalogue order: best first
    default_label: str  # "Name:Version" of the model used when a request names none
    _default_versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def default(self) -> ModelEntry:
        if not self.default_label:
            raise UnknownModel(
                "This deployment has no default model yet (none is configured, and no worker has started to "
                "choose one for its hardware); name one in ModelName."
            )
        name, _, version = self.default_label.partition(":")
        return self.resolve(name, version or None)

    def resolve(self, name: str | None, version: str | None) -> ModelEntry:
        """The entry a request names; the defaults fill what it leaves out."""
        if not name:
            if version:
                return self.resolve(self.default.name, version)
            return self.default
        versions = sorted(v for (n, v) in self.entries if n == name)
        if not versions:
            raise UnknownModel(f"ModelName {name!r} is not served here; available: {', '.join(self.names())}.")
        version = version or self._default_versions.get(name) or versions[-1]
        entry = self.entries.get((name, version))
        if entry is None:
            raise UnknownModel(
                f"ModelVersion {version!r} of {name!r} is not served here; available: {', '.join(versions)}."
            )
        return entry

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self.entries})

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(sorted(self.entries.values(), key=lambda e: (e.name, e.version)))

    def with_default(self, label: str) -> Catalog:
        """This catalogue with ``label`` ("Name" or "Name:Version") as its default."""
        try:
            entry = dataclasses.replace(self, default_label=label).default
        except UnknownModel as exc:
            raise ConfigError(f"the default model {label!r} is not in the model catalogue: {exc}") from exc
        return dataclasses.replace(self, default_label=entry.label)


def default_for(catalog: Catalog, hardware: Hardware) -> tuple[ModelEntry, str]:
    """The best model for ``hardware`` and why: the first entry (in catalogue order, best first)
    that fits its memory; with none that fits, the smallest one. Never the noise-making test model."""
    candidates = [entry for entry in catalog.entries.values() if entry.engine != "tiny-random"]
    for entry in candidates:
        if entry.fits(hardware):
            return entry, f"the best built-in model that fits this host ({hardware.describe()})"
    key = "memory_gb" if hardware.kind == "cuda" else "cpu_memory_gb"
    sized = [e for e in candidates if getattr(e, key) > 0]
    smallest = min(sized or candidates, key=lambda e: getattr(e, key))
    return smallest, f"no model fits this host ({hardware.describe()}); the smallest one"


def load_catalog(extra_file: str = "", default_model: str = "") -> Catalog:
    """The built-in catalogue, changed by ``extra_file``; ``default_model`` ("Name" or
    "Name:Version") overrides the files' ``default_model``."""
    builtin = resources.files("aigc_image").joinpath("models.toml").read_text("utf-8")
    documents = [("built-in models.toml", tomllib.loads(builtin))]
    if extra_file:
        documents.append((extra_file, read_toml(extra_file, "model registry")))
    raw_entries: dict[tuple[Any, Any], tuple[str, dict[str, Any]]] = {}
    chosen_default = ""
    for origin, document in documents:
        unknown = set(document) - {"default_model", "models"}
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        chosen_default = document.get("default_model", chosen_default)
        for raw in document.get("models", []):
            key = (raw.get("name"), raw.get("version"))
            _, earlier = raw_entries.get(key, (origin, {}))
            raw_entries[key] = (origin, {**earlier, **raw})
    entries = {key: _entry(raw, origin) for key, (origin, raw) in raw_entries.items()}
    default_versions: dict[str, str] = {}
    for entry in entries.values():
        if entry.default:
            if entry.name in default_versions:
                raise ConfigError(f"model {entry.name!r} has more than one version marked default")
            default_versions[entry.name] = entry.version
    catalog = Catalog(entries, "", default_versions)
    return catalog.with_default(default_model or chosen_default) if (default_model or chosen_default) else catalog


def _brief(value: Any) -> str:
    return f"[{len(value)} values]" if isinstance(value, list) else str(value)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(ModelEntry)}
_TYPE_NAMES = {
    "Mapping[str, Any]": "a table",
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "float | None": "a number",
    "tuple[str, ...]": "a list of strings",
}


def _fits_type(raw: Mapping[str, Any], key: str, hint: str) -> bool:
    if key not in raw:
        return True
    value = raw[key]
    if hint == "str":
        return isinstance(value, str)
    if hint == "bool":
        return isinstance(value, bool)
    if hint == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in ("float", "float | None"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint == "Mapping[str, Any]":
        return isinstance(value, dict)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _entry(raw: Mapping[str, Any], origin: str) -> ModelEntry:
    names = {f.name for f in dataclasses.fields(ModelEntry)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{origin}: unknown model key(s) {', '.join(sorted(unknown))}")
    problems = [
        f"{key} must be {_TYPE_NAMES[hint]}" for key, hint in _FIELD_TYPES.items() if not _fits_type(raw, key, hint)
    ]
    missing = {"name", "version", "engine"} - set(raw)
    if problems or missing:
        what = "; ".join(problems + [f"{key} is required" for key in sorted(missing)])
        raise ConfigError(f"{origin}: model entry {raw.get('name', '?')}:{raw.get('version', '?')}: {what}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    for key in ("memory_gb", "cpu_memory_gb", "download_gb"):
        if key in values:
            values[key] = float(values[key])
    if not values.get("max_steps"):
        values["max_steps"] = max(DEFAULT_MAX_STEPS, values.get("steps", ModelEntry.steps))
    entry = ModelEntry(**values)
    if entry.engine not in ENGINES:
        problems.append(f"engine must be one of {', '.join(ENGINES)}")
    if entry.prompt_style not in STYLES:
        problems.append(f"prompt_style must be one of {', '.join(STYLES)}")
    if entry.cache not in CACHES:
        problems.append(f"cache must be one of {', '.join(CACHES)}")
    if entry.cache_options and entry.cache == "none":
        problems.append("cache_options needs a cache")
    if entry.dtype not in DTYPES:
        problems.append(f"dtype must be one of {', '.join(DTYPES)}")
    if entry.engine == "diffusers" and not entry.source:
        problems.append("a diffusers model needs a source (repo id or directory)")
    if entry.steps < 1 or entry.width < 8 or entry.height < 8 or entry.max_output_images < 1:
        problems.append("steps, width, height and max_output_images must be positive")
    if entry.max_batch < 1:
        problems.append("max_batch must be positive")
    if entry.max_steps < entry.steps:
        problems.append("max_steps must be at least steps")
    if entry.size_multiple < 1 or not 1 <= entry.size_min_side <= entry.size_max_side:
        problems.append("size_multiple must be positive and size_min_side at most size_max_side")
    if min(entry.memory_gb, entry.cpu_memory_gb, entry.download_gb) < 0:
        problems.append("memory_gb, cpu_memory_gb and download_gb must not be negative")
    if entry.image_shared and not entry.image_source:
        problems.append("image_shared needs image_source (without it every component is shared)")
    if unknown_ratios := set(entry.aspect_ratios) - set(ASPECT_RATIOS):
        problems.append(
            f"aspect_ratios: unknown {', '.join(sorted(unknown_ratios))}; known: {', '.join(ASPECT_RATIOS)}"
        )
    if unknown_resolutions := set(entry.resolutions) - set(SHORTER_SIDE):
        problems.append(
            f"resolutions: unknown {', '.join(sorted(unknown_resolutions))}; known: {', '.join(SHORTER_SIDE)}"
        )
    if problems:
        raise ConfigError(f"{origin}: model {entry.label}: {'; '.join(problems)}")
    return entry
