"""The model catalogue: which open model serves each ``ModelName``/``ModelVersion``, and what it can do.

The API validates requests against it, the worker loads models from it and the CLI lists it.
The built-in catalogue (``models.toml`` beside this file) maps the MPS model names to open
models; an operator's file (setting ``models.registry_file``) adds entries, or changes built-in
ones: an entry with the same name and version as a built-in one changes only the keys it sets.
The format is documented in docs/models.md.

Entries are validated by pydantic (``ModelEntry``): unknown keys, wrong types and values outside
their vocabulary stop the program with a ``ConfigError`` naming the file and the entry. How a
model family is called (guidance, sizes, samplers) is the engine's business (engines/families.py);
this module knows only what each entry promises, and imports nothing but config, errors and tasks.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from aigc_image.config import ConfigError, read_toml
from aigc_image.errors import UnknownModel
from aigc_image.tasks import AspectRatio, Resolution

Engine = Literal["diffusers", "tiny-random"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Cache = Literal["none", "first_block", "taylorseer", "mag"]
PromptStyle = Literal["natural", "tags"]  # EnhancePrompt's built-in rewrite: sentences or tags (enhance.py)
# Weights quantized at load (engines/quantize.py): torchao int8 or float8 weights, bitsandbytes NF4, or a
# GGUF file of the denoiser (``denoiser_file``), which carries its own quantization.
Quantization = Literal["none", "int8", "float8", "nf4", "gguf"]
# Samplers by the names A1111 and ComfyUI users know (engines/samplers.py maps each to a scheduler).
Sampler = Literal[
    "Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras", "DDIM", "PLMS", "UniPC", "DEIS",
]  # fmt: skip
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)
STANDARD_RESOLUTIONS: tuple[Resolution, ...] = ("720P", "1080P", "2K", "4K")  # 1K only where a model lists it
DEFAULT_MAX_STEPS = 100
MAX_LORA_SCALE = 4.0  # an adapter's scale, in the catalogue or a request: -4 to 4 (slider adapters go negative)
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".gguf")


@dataclass(frozen=True)
class ModelLabel:
    """How a model is named outside the catalogue: ``Name`` or ``Name:Version`` (settings, the CLI,
    the OpenAI face's ``model``). ``parse`` is the one parser of that form."""

    name: str
    version: str | None = None  # None: the model's default version

    @classmethod
    def parse(cls, text: str) -> ModelLabel:
        name, colon, version = text.strip().partition(":")
        if not name or (colon and not version) or ":" in version:
            raise ValueError(f"{text!r} is not a model: write Name or Name:Version, e.g. Qwen or Qwen:0925")
        return cls(name, version or None)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _as_number(value: Any) -> Any:
    """TOML writes 64 for 64.0: an integer is a number here (strict mode would refuse it)."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Strings = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]
Number = Annotated[float, BeforeValidator(_as_number)]


class Adapter(BaseModel):
    """A LoRA adapter an entry offers: a ``.safetensors`` file, a folder, or a Hugging Face repo id
    (with ``weight_name`` when it holds several files)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    source: str = Field(min_length=1)
    weight_name: str = ""


def _adapter(value: Any) -> Any:
    return {"source": value} if isinstance(value, str) else value


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    engine: Engine
    source: str = ""  # Hugging Face repo id, local diffusers folder, or a single .safetensors checkpoint
    source_config: str = ""  # for a single-file source: a diffusers folder or repo id with its configs
    pipeline: str = "AutoPipelineForText2Image"
    dtype: Dtype = "auto"
    variant: str = ""  # weights variant to load, e.g. "fp16" (smaller download; upcast on CPUs)
    default: bool = False  # the version used when a request names only the model
    description: str = ""
    steps: int = 30
    max_steps: int = 0  # most AdditionalParameters steps a request may ask for (0: 100, or steps if more)
    guidance_scale: Number | None = None  # None: the pipeline's own default
    guidance: bool = True  # whether AdditionalParameters guidance_scale applies (false: guidance-distilled)
    width: int = 1024
    height: int = 1024
    negative_prompt: bool = True
    max_output_images: int = 4
    max_batch: int = 8  # most tasks one pipeline call serves (worker.max_batch caps it too)
    max_reference_images: int = 0  # ImageInfos: 0 none, 1 image-to-image, more: multi-reference editing
    image_pipeline: str = "AutoPipelineForImage2Image"  # the pipeline class that takes ImageInfos
    image_source: str = ""  # where its own weights are; "" = it reuses every component of the model
    image_shared: Strings = ()  # with image_source: components taken from the loaded model instead
    reference_strength: bool = True  # whether AdditionalParameters strength applies to ImageInfos
    prompt_style: PromptStyle = "natural"
    panorama: bool = False  # SceneType 3d_panorama
    # ExtraParameters.AspectRatio / Resolution this model accepts (any model can: its images are
    # generated at its native size in that shape, then resized).
    aspect_ratios: Annotated[tuple[AspectRatio, ...], BeforeValidator(_as_tuple)] = get_args(AspectRatio)
    resolutions: Annotated[tuple[Resolution, ...], BeforeValidator(_as_tuple)] = STANDARD_RESOLUTIONS
    size_multiple: int = 16  # generated sides are multiples of this (the VAE and transformer need it)
    # Bounds of AdditionalParameters {"size": "WxH"}; 0 pixels: no bound beyond the sides.
    size_min_side: int = 256
    size_max_side: int = 2048
    size_min_pixels: int = 0
    size_max_pixels: int = 0
    # Samplers a request may choose (AdditionalParameters sampler); without one, the model's own scheduler.
    samplers: Annotated[tuple[Sampler, ...], BeforeValidator(_as_tuple)] = ()
    # LoRA adapters: ``adapters`` are the ones offered (name → file, folder or repo); ``loras`` the ones
    # applied to every request, with their scales. A request's AdditionalParameters loras change the
    # scales of named offered adapters (0 turns one off); the base weights are never reloaded.
    adapters: dict[str, Annotated[Adapter, BeforeValidator(_adapter)]] = Field(default_factory=dict)
    loras: dict[str, Number] = Field(default_factory=dict)
    quantization: Quantization = "none"  # applied at load to the denoiser and text encoders
    denoiser_file: str = ""  # a single-file denoiser (.safetensors or .gguf) replacing the source's
    # Accelerations (docs/models.md gives each one's measured speed-up and pixel difference);
    # off by default, since each changes the pixels a little.
    compile: bool = False  # torch.compile of the denoiser's repeated blocks (regional), warmed up at load
    cache: Cache = "none"  # reuse of the denoiser's work between steps
    cache_options: dict[str, Any] = Field(default_factory=dict)  # that method's diffusers config, e.g. threshold
    channels_last: bool = False  # channels-last memory layout for a UNet's convolutions
    # What running it takes, for the hardware-aware default, offloading and `aigc-image models`: in the
    # entry's dtype and quantization.
    memory_gb: Number = 0.0  # GPU memory for one image at the native size
    cpu_memory_gb: Number = 0.0  # RAM to run it on a CPU (float32, or quantized); 0: too slow to offer on CPUs
    download_gb: Number = 0.0  # size of the weights it downloads

    @model_validator(mode="before")
    @classmethod
    def _default_max_steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("max_steps"):
            steps = data.get("steps", 30)
            data = {**data, "max_steps": max(DEFAULT_MAX_STEPS, steps) if isinstance(steps, int) else 0}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def problems(self) -> list[str]:
        """What the keys say that cannot be true together (each key is already of the right type)."""
        found = []
        if self.engine == "diffusers" and not self.source:
            found.append("a diffusers model needs a source (repo id, directory or .safetensors file)")
        if self.steps < 1 or self.width < 8 or self.height < 8 or self.max_output_images < 1:
            found.append("steps, width, height and max_output_images must be positive")
        if self.max_batch < 1:
            found.append("max_batch must be positive")
        if self.max_steps < self.steps:
            found.append("max_steps must be at least steps")
        if self.size_multiple < 1 or not 1 <= self.size_min_side <= self.size_max_side:
            found.append("size_multiple must be positive and size_min_side at most size_max_side")
        if min(self.memory_gb, self.cpu_memory_gb, self.download_gb) < 0:
            found.append("memory_gb, cpu_memory_gb and download_gb must not be negative")
        if self.image_shared and not self.image_source:
            found.append("image_shared needs image_source (without it every component is shared)")
        if self.cache_options and self.cache == "none":
            found.append("cache_options needs a cache")
        if self.source_config and not self.single_file:
            found.append("source_config is for a single-file source (a .safetensors file)")
        if (self.quantization == "gguf") != self.denoiser_file.endswith(".gguf"):
            found.append('quantization "gguf" goes with a .gguf denoiser_file, and a .gguf file with "gguf"')
        if self.denoiser_file and not self.denoiser_file.endswith(SINGLE_FILE_SUFFIXES):
            found.append("denoiser_file must be a .safetensors or .gguf file")
        if self.quantization != "none" and self.engine != "diffusers":
            found.append("quantization is for diffusers models")
        if unknown := sorted(set(self.loras) - set(self.adapters)):
            found.append(f"loras names adapters that are not in adapters: {', '.join(unknown)}")
        if any(not -MAX_LORA_SCALE <= scale <= MAX_LORA_SCALE for scale in self.loras.values()):
            found.append(f"loras scales must be between {-MAX_LORA_SCALE:g} and {MAX_LORA_SCALE:g}")
        if self.adapters and self.engine != "diffusers":
            found.append("adapters are for diffusers models")
        if self.adapters and self.image_source:
            found.append("adapters apply to the model's own weights; its editing model (image_source) takes none")
        if self.single_file and self.quantization in ("int8", "float8", "nf4"):
            found.append("quantization int8, float8 and nf4 need a diffusers-format source (or a denoiser_file)")
        return found

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def single_file(self) -> bool:
        """Whether ``source`` is one checkpoint file (A1111/ComfyUI style) rather than a diffusers model."""
        return self.source.endswith(SINGLE_FILE_SUFFIXES)

    @property
    def accelerations(self) -> list[str]:
        """What is turned on, as `aigc-image models` shows it."""
        options = ", ".join(f"{k}={_brief(v)}" for k, v in self.cache_options.items())
        cache = [f"{self.cache}({options})" if options else self.cache] if self.cache != "none" else []
        return [name for name, on in (("compile", self.compile), ("channels_last", self.channels_last)) if on] + cache

    def changed(self, **changes: Any) -> ModelEntry:
        """This entry with some keys changed, validated again (``model_copy`` would not check them)."""
        return ModelEntry.model_validate(self.model_dump() | changes)


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
        label = ModelLabel.parse(self.default_label)
        return self.resolve(label.name, label.version)

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

    def lookup(self, label: ModelLabel) -> ModelEntry:
        return self.resolve(label.name, label.version)

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self.entries})

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(sorted(self.entries.values(), key=lambda e: (e.name, e.version)))

    def with_default(self, label: str) -> Catalog:
        """This catalogue with ``label`` ("Name" or "Name:Version") as its default."""
        try:
            entry = dataclasses.replace(self, default_label=str(ModelLabel.parse(label))).default
        except (UnknownModel, ValueError) as exc:
            raise ConfigError(f"the default model {label!r} is not in the model catalogue: {exc}") from exc
        return dataclasses.replace(self, default_label=entry.label)


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
            if earlier and _stale_memory(earlier, raw):
                raise ConfigError(
                    f"{origin}: model {key[0]}:{key[1]}: it changes quantization, so it needs its own memory_gb "
                    "(and cpu_memory_gb): what the quantized model needs (docs/models.md, Quantization)"
                )
            raw_entries[key] = (origin, {**earlier, **raw})
    entries = {key: parse_entry(raw, origin) for key, (origin, raw) in raw_entries.items()}
    default_versions: dict[str, str] = {}
    for entry in entries.values():
        if entry.default:
            if entry.name in default_versions:
                raise ConfigError(f"model {entry.name!r} has more than one version marked default")
            default_versions[entry.name] = entry.version
    catalog = Catalog(entries, "", default_versions)
    return catalog.with_default(default_model or chosen_default) if (default_model or chosen_default) else catalog


def parse_entry(raw: Mapping[str, Any], origin: str) -> ModelEntry:
    """One ``[[models]]`` table as an entry, or a ConfigError naming ``origin``, the entry and every problem."""
    try:
        return ModelEntry.model_validate(dict(raw))
    except ValidationError as exc:
        what = "; ".join(_problem(error) for error in exc.errors())
        raise ConfigError(f"{origin}: model entry {raw.get('name', '?')}:{raw.get('version', '?')}: {what}") from None


# pydantic's error types, as the registry's documentation names TOML's types (docs/models.md)
_TYPE_NAMES = {
    "string_type": "a string", "bool_type": "true or false", "int_type": "an integer", "float_type": "a number",
    "dict_type": "a table", "model_type": "a table", "tuple_type": "a list", "list_type": "a list",
}  # fmt: skip


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] in _TYPE_NAMES:
        return f"{where} must be {_TYPE_NAMES[error['type']]}"
    if error["type"] == "literal_error":  # a value outside the key's vocabulary, in a list or not
        key = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        return f"{key}: unknown {error['input']!r}; known: {error['ctx']['expected']}"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where}"
    if error["type"] == "missing":
        return f"{where} is required"
    if error["type"] == "value_error":  # the cross-field checks: their own sentences
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _stale_memory(builtin: Mapping[str, Any], change: Mapping[str, Any]) -> bool:
    """A change of an entry's quantization that keeps the memory figures of the unquantized model."""
    requantized = "quantization" in change and change["quantization"] != builtin.get("quantization", "none")
    keeps = any(key in builtin and key not in change for key in ("memory_gb", "cpu_memory_gb"))
    return requantized and keeps


def _brief(value: Any) -> str:
    return f"[{len(value)} values]" if isinstance(value, list) else str(value)
