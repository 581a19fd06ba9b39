"""The model registry: which engine and weights serve each ``ModelName``/``ModelVersion``.

The built-in registry (``models.toml`` beside this file) maps the MPS model names to
open models; an operator's registry file adds entries or replaces built-in ones with
the same name and version. The format is documented in docs/models.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aigc_image.config import ConfigError
from aigc_image.enhance import STYLES
from aigc_image.errors import ModelNotSupported
from aigc_image.media.sizes import ASPECT_RATIOS, SHORTER_SIDE, STANDARD_RESOLUTIONS

ENGINES = ("diffusers", "tiny-random")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    engine: str
    source: str = ""  # Hugging Face repo id or local directory
    pipeline: str = "AutoPipelineForText2Image"
    dtype: str = "auto"
    default: bool = False  # the version used when a request names only the model
    description: str = ""
    steps: int = 30
    guidance_scale: float | None = None  # None: the pipeline's own default
    width: int = 1024
    height: int = 1024
    negative_prompt: bool = True
    max_output_images: int = 4
    max_reference_images: int = 0  # ImageInfos: 0 none, 1 image-to-image, more: multi-reference editing
    image_pipeline: str = "AutoPipelineForImage2Image"  # made from the loaded pipeline for ImageInfos
    prompt_style: str = "natural"  # EnhancePrompt's built-in rewrite: "natural" sentences or "tags"
    panorama: bool = False  # SceneType 3d_panorama (needs a convolutional denoiser: circular padding)
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

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Registry:
    entries: Mapping[tuple[str, str], ModelEntry]
    default_model: str
    _default_versions: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, name: str | None, version: str | None) -> ModelEntry:
        """The entry a request names; the defaults fill what it leaves out."""
        name = name or self.default_model
        versions = sorted(v for (n, v) in self.entries if n == name)
        if not versions:
            raise ModelNotSupported(f"ModelName {name!r} is not served here; available: {', '.join(self.names())}.")
        version = version or self._default_versions.get(name) or versions[-1]
        entry = self.entries.get((name, version))
        if entry is None:
            raise ModelNotSupported(
                f"ModelVersion {version!r} of {name!r} is not served here; available: {', '.join(versions)}."
            )
        return entry

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self.entries})

    def __iter__(self) -> Any:
        return iter(sorted(self.entries.values(), key=lambda e: (e.name, e.version)))


def load_registry(extra_file: str = "", default_model: str = "") -> Registry:
    """The built-in registry, extended by ``extra_file``; ``default_model`` overrides both defaults."""
    builtin = resources.files("aigc_image.engines").joinpath("models.toml").read_text("utf-8")
    documents = [("built-in models.toml", tomllib.loads(builtin))]
    if extra_file:
        try:
            documents.append((extra_file, tomllib.loads(Path(extra_file).read_text("utf-8"))))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read model registry {extra_file}: {exc}") from exc
    entries: dict[tuple[str, str], ModelEntry] = {}
    chosen_default = ""
    for origin, document in documents:
        unknown = set(document) - {"default_model", "models"}
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        chosen_default = document.get("default_model", chosen_default)
        for raw in document.get("models", []):
            entry = _entry(raw, origin)
            entries[(entry.name, entry.version)] = entry
    default_versions: dict[str, str] = {}
    for entry in entries.values():
        if entry.default:
            if entry.name in default_versions:
                raise ConfigError(f"model {entry.name!r} has more than one version marked default")
            default_versions[entry.name] = entry.version
    registry = Registry(entries, default_model or chosen_default, default_versions)
    try:
        registry.resolve(None, None)
    except ModelNotSupported as exc:
        raise ConfigError(f"the default model is not in the registry: {exc}") from exc
    return registry


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(ModelEntry)}
_TYPE_NAMES = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "float | None": "a number",
    "tuple[str, ...]": "a list of strings",
}


def _fits(raw: Mapping[str, Any], key: str, hint: str) -> bool:
    if key not in raw:
        return True
    value = raw[key]
    if hint == "str":
        return isinstance(value, str)
    if hint == "bool":
        return isinstance(value, bool)
    if hint == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if hint == "float | None":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _entry(raw: Mapping[str, Any], origin: str) -> ModelEntry:
    names = {f.name for f in dataclasses.fields(ModelEntry)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{origin}: unknown model key(s) {', '.join(sorted(unknown))}")
    problems = [f"{key} must be {_TYPE_NAMES[hint]}" for key, hint in _FIELD_TYPES.items() if not _fits(raw, key, hint)]
    missing = {"name", "version", "engine"} - set(raw)
    if problems or missing:
        what = "; ".join(problems + [f"{key} is required" for key in sorted(missing)])
        raise ConfigError(f"{origin}: model entry {raw.get('name', '?')}:{raw.get('version', '?')}: {what}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    entry = ModelEntry(**values)
    if entry.engine not in ENGINES:
        problems.append(f"engine must be one of {', '.join(ENGINES)}")
    if entry.prompt_style not in STYLES:
        problems.append(f"prompt_style must be one of {', '.join(STYLES)}")
    if entry.dtype not in DTYPES:
        problems.append(f"dtype must be one of {', '.join(DTYPES)}")
    if entry.engine == "diffusers" and not entry.source:
        problems.append("a diffusers model needs a source (repo id or directory)")
    if entry.steps < 1 or entry.width < 8 or entry.height < 8 or entry.max_output_images < 1:
        problems.append("steps, width, height and max_output_images must be positive")
    if entry.size_multiple < 1 or not 1 <= entry.size_min_side <= entry.size_max_side:
        problems.append("size_multiple must be positive and size_min_side at most size_max_side")
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
