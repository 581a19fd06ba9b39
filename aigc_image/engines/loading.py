"""Loading a catalogue entry's pipelines and placing them on the device.

1. ``load_pipeline``: ``from_pretrained`` of the entry's source (a Hugging Face repo id or a local
   diffusers folder), in the entry's dtype on GPUs and float32 on CPUs, its weights variant when
   the source has it, quantized as the entry says (engines/quantize.py), and Qwen-VL processors
   without their video half where torchvision is missing (engines/processors.py). A single-file
   source (one ``.safetensors`` checkpoint, as A1111 and ComfyUI keep them) loads with
   ``from_single_file``, its configs and tokenizers from ``source_config``; a ``denoiser_file``
   (``.safetensors``, or a quantized ``.gguf``) replaces the source's denoiser. The entry's LoRA
   adapters load last (engines/adapters.py).
2. ``load_image_pipeline``: the pipeline that takes ``ImageInfos``. Without ``image_source`` it is
   made of the loaded pipeline's components (``sharing``: no second copy of anything, and unlike
   ``from_pipe`` nothing cast); with one, its own weights load from there and the components named
   in ``image_shared`` are the loaded pipeline's (Qwen-Image-Edit shares Qwen-Image's text encoder
   and VAE).
3. ``place``: on a GPU, all components go to the device when they fit its memory. When they do not,
   diffusers' model CPU offload keeps each component on the host until its turn; when even the
   largest component does not fit, group offloading streams it in blocks. Either is logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import diffusers
import torch

from aigc_image.catalog import ModelEntry
from aigc_image.engines import quantize
from aigc_image.engines.adapters import load_adapters
from aigc_image.engines.processors import IMAGE_ONLY, load_image_only_processor, needs_image_only_processor
from aigc_image.engines.tiny_random import build_pipeline
from aigc_image.errors import ModelUnavailable
from aigc_image.hardware import USABLE_MEMORY
from aigc_image.weights import is_local

log = logging.getLogger(__name__)
WORKING_ROOM = 1.25  # memory to run a model at its native size, as a multiple of its weights' (measured)


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def pick_dtype(entry: ModelEntry, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32  # half precision on CPUs is slow or unsupported
    if entry.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype: torch.dtype = getattr(torch, entry.dtype)
    return dtype


def load_pipeline(entry: ModelEntry, device: torch.device, allow_download: bool) -> Any:
    """The entry's pipeline, loaded on the host (``place`` moves it)."""
    if entry.engine == "tiny-random":
        return build_pipeline()
    quantize.check(entry, device)
    given = _denoiser_from_file(entry, device, allow_download) if entry.denoiser_file else {}
    if entry.single_file:
        pipe = _from_single_file(entry, device, allow_download, given)
    else:
        pipe = _from_pretrained(entry, entry.pipeline, entry.source, device, allow_download, given)
    load_adapters(pipe, entry, allow_download)
    return pipe


def load_image_pipeline(entry: ModelEntry, base: Any, device: torch.device, allow_download: bool) -> Any:
    """The pipeline that serves ``ImageInfos`` for ``entry``, sharing what it can with ``base``."""
    pipeline_class = getattr(diffusers, entry.image_pipeline, None)
    if not (isinstance(pipeline_class, type) and hasattr(pipeline_class, "from_pipe")):
        raise ModelUnavailable(
            f"Model {entry.label}: diffusers has no pipeline class {entry.image_pipeline!r} for reference "
            "images; fix 'image_pipeline' in the model registry."
        )
    if not entry.image_source:
        return sharing(entry, pipeline_class, base)
    shared = {name: getattr(base, name) for name in entry.image_shared}
    return _from_pretrained(entry, entry.image_pipeline, entry.image_source, device, allow_download, shared)


def sharing(entry: ModelEntry, pipeline_class: Any, base: Any) -> Any:
    """``pipeline_class`` made of ``base``'s components, as diffusers' ``from_pipe`` makes it, without
    its cast: ``from_pipe`` casts every shared module to float32 unless told a dtype (a bf16 model
    on a GPU would double in memory), and cannot cast a quantized one at all."""
    if pipeline_class.__name__.startswith("AutoPipeline"):  # the family's own class for the task
        from diffusers.pipelines.auto_pipeline import AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, _get_task_class

        pipeline_class = _get_task_class(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, type(base).__name__, False)
        if pipeline_class is None:
            raise ModelUnavailable(
                f"Model {entry.label}: diffusers has no image-to-image pipeline for {type(base).__name__}; "
                "set 'image_pipeline' in the model registry, or max_reference_images = 0."
            )
    expected, optional = pipeline_class._get_signature_keys(pipeline_class)
    components = {name: base.components.get(name) for name in expected}
    missing = [
        name for name, part in components.items() if part is None and name not in pipeline_class._optional_components
    ]
    if missing:
        raise ModelUnavailable(
            f"Model {entry.label}: {pipeline_class.__name__} needs {', '.join(missing)}, which {type(base).__name__} "
            "does not have; set 'image_source' to where its weights are."
        )
    settings = {name: base.config[name] for name in optional if name in base.config}
    return pipeline_class(**components, **settings)


def _pipeline_class(entry: ModelEntry, class_name: str, loader: str) -> Any:
    pipeline_class = getattr(diffusers, class_name, None)
    if not (isinstance(pipeline_class, type) and hasattr(pipeline_class, loader)):
        how = "" if loader == "from_pretrained" else " that loads single-file checkpoints"
        raise ModelUnavailable(
            f"Model {entry.label}: diffusers has no pipeline class {class_name!r}{how} "
            f"(installed diffusers {diffusers.__version__}); fix the model registry."
        )
    return pipeline_class


def _from_pretrained(
    entry: ModelEntry, class_name: str, source: str, device: torch.device, allow_download: bool, given: dict[str, Any]
) -> Any:
    pipeline_class = _pipeline_class(entry, class_name, "from_pretrained")
    local = is_local(source)
    if local and not Path(source).expanduser().is_dir():
        raise ModelUnavailable(
            f"Model {entry.label}: the weights directory {source} does not exist; "
            "put a diffusers model folder there or fix 'source' in the model registry."
        )
    dtype = pick_dtype(entry, device)
    options: dict[str, Any] = {"dtype": dtype, "local_files_only": local or not allow_download, **given}
    quantization = quantize.pipeline_config(entry, pipeline_class, dtype, skip=set(given))
    if quantization is not None:
        options["quantization_config"] = quantization
    try:
        processor = _processor_class(source, local) if "processor" not in given else None
        if processor in IMAGE_ONLY and needs_image_only_processor():
            options["processor"] = load_image_only_processor(_component_folder(source, "processor", options), processor)
        try:
            return pipeline_class.from_pretrained(source, variant=entry.variant or None, **options)
        except ValueError as exc:
            if not entry.variant or "variant" not in str(exc):
                raise
            log.info("model %s: %s has no %s weights; loading its default ones", entry.label, source, entry.variant)
            return pipeline_class.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_missing_weights_message(entry, source, local, allow_download, exc)) from exc


def _from_single_file(entry: ModelEntry, device: torch.device, allow_download: bool, given: dict[str, Any]) -> Any:
    """A pipeline from one checkpoint file; offline, ``source_config`` (a diffusers folder or a cached
    repo id) gives the configs and tokenizers that the file does not hold."""
    pipeline_class = _pipeline_class(entry, entry.pipeline, "from_single_file")
    path = Path(entry.source).expanduser()
    if is_local(entry.source) and not path.is_file():
        raise ModelUnavailable(f"Model {entry.label}: the checkpoint file {entry.source} does not exist.")
    options: dict[str, Any] = {
        "dtype": pick_dtype(entry, device),
        "local_files_only": not allow_download,
        **({"config": entry.source_config} if entry.source_config else {}),
        **given,
    }
    try:
        return pipeline_class.from_single_file(str(path) if is_local(entry.source) else entry.source, **options)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = _first_line(exc)
        hint = "" if entry.source_config else (
            " Set 'source_config' to a diffusers folder (or a repo id in the Hugging Face cache) of the same "
            "architecture: its configs and tokenizers describe the checkpoint."
        )  # fmt: skip
        message = f"Model {entry.label}: cannot load the checkpoint {entry.source}: {reason}.{hint}"
        raise ModelUnavailable(message) from exc


def _denoiser_from_file(entry: ModelEntry, device: torch.device, allow_download: bool) -> dict[str, Any]:
    """The denoiser of ``denoiser_file`` (GGUF-quantized, or a .safetensors one), as a given component;
    its config comes from the source's (or ``source_config``'s) denoiser folder."""
    reference = entry.source_config or entry.source
    name, class_name = _denoiser_of(entry, reference, allow_download)
    model_class = getattr(diffusers, class_name, None)
    if model_class is None or not hasattr(model_class, "from_single_file"):
        raise ModelUnavailable(f"Model {entry.label}: diffusers cannot load a {class_name} from a single file.")
    dtype = pick_dtype(entry, device)
    options: dict[str, Any] = {"config": reference, "subfolder": name, "local_files_only": not allow_download}
    if entry.quantization == "gguf":
        options["quantization_config"] = quantize.gguf_config(dtype)
    elif entry.quantization != "none":
        options["quantization_config"] = quantize.component_config(entry.quantization, dtype, text=False)
    try:
        return {name: model_class.from_single_file(entry.denoiser_file, torch_dtype=dtype, **options)}
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelUnavailable(
            f"Model {entry.label}: cannot load the denoiser file {entry.denoiser_file}: {_first_line(exc)}"
        ) from exc


def _denoiser_of(entry: ModelEntry, reference: str, allow_download: bool) -> tuple[str, str]:
    """(component name, model class) of the pipeline's denoiser, from ``reference``'s model_index.json."""
    index = _model_index(reference, is_local(reference), local_files_only=not allow_download)
    for name in ("transformer", "unet"):
        if name in index:
            return name, str(index[name][1])
    raise ModelUnavailable(f"Model {entry.label}: {reference} has no transformer or unet for denoiser_file to replace.")


def _model_index(source: str, local: bool, local_files_only: bool = True) -> dict[str, Any]:
    try:
        if local:
            return dict(json.loads((Path(source).expanduser() / "model_index.json").read_text()))
        pipeline_class = getattr(diffusers, "DiffusionPipeline")  # noqa: B009 - the generic loader
        return dict(pipeline_class.load_config(source, local_files_only=local_files_only))
    except (OSError, ValueError):
        return {}


def _processor_class(source: str, local: bool) -> str | None:
    """The class name of the source's ``processor`` component, if it has one."""
    entry = _model_index(source, local).get("processor")
    return str(entry[1]) if isinstance(entry, list) and len(entry) == 2 else None


def _component_folder(source: str, name: str, options: dict[str, Any]) -> Path:
    if is_local(source):
        return Path(source).expanduser() / name
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(source, allow_patterns=[f"{name}/*"], local_files_only=options["local_files_only"])
    return Path(snapshot) / name


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _missing_weights_message(entry: ModelEntry, source: str, local: bool, allow_download: bool, exc: Exception) -> str:
    if not local:  # the Hub's own cause (no network, a gated repository), not diffusers' "see the stacktrace above"
        while (cause := exc.__cause__ or exc.__context__) is not None and isinstance(cause, Exception):
            exc = cause
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if local:
        return (
            f"Model {entry.label}: cannot load the diffusers model in {source}: {reason}. "
            "Check that the folder holds a complete diffusers model (model_index.json and its components)."
        )
    how = (
        f"Run `aigc-image pull {entry.label}` where the Hub is reachable (or `hf download {source}` and copy "
        "the Hugging Face cache, HF_HOME, to this host), or set 'source' in the model registry to a local "
        "diffusers folder."
    )
    if allow_download:
        return (
            f"Model {entry.label}: the weights of {source} are not cached here and could not be downloaded: "
            f"{reason.rstrip('.')}. {how}"
        )
    return (
        f"Model {entry.label}: the weights of {source} are not in the local Hugging Face cache and "
        f"downloads are disabled (models.allow_download = false). {how}"
    )


def modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s weights as stored: quantized tensors (torchao's subclasses) count their parts."""
    return sum(tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))


def tensor_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel() * tensor.element_size())


def place(pipe: Any, entry: ModelEntry, device: torch.device, already_used: int = 0) -> str:
    """Put ``pipe`` on ``device`` as memory allows; returns how ("resident", "model offload", ...).

    ``already_used``: bytes of other loaded pipelines' weights that will stay on the device.
    """
    if device.type != "cuda":
        pipe.to(device)
        return "resident"
    sizes = [weight_bytes(module) for module in modules(pipe).values()]
    usable = USABLE_MEMORY * torch.cuda.get_device_properties(device).total_memory - already_used
    how = placement(sizes, usable)
    if how == "resident":
        pipe.to(device)
        return how
    if how == "model offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_group_offload(onload_device=device, offload_type="leaf_level", use_stream=True)
    log.warning(
        "model %s needs about %.0f GiB but %.0f GiB of %s are free for it: running it with %s (slower)",
        entry.label, sum(sizes) * WORKING_ROOM / 1024**3, usable / 1024**3, device, how,
    )  # fmt: skip
    return how


def placement(component_bytes: list[int], usable_bytes: float) -> str:
    """How a model whose components weigh ``component_bytes`` runs in ``usable_bytes`` of GPU memory:
    all on the GPU; one component at a time (diffusers' model CPU offload); or, when even the
    largest component does not fit, streamed in groups of layers (group offloading)."""
    if sum(component_bytes) * WORKING_ROOM <= usable_bytes:
        return "resident"
    if max(component_bytes, default=0) * WORKING_ROOM <= usable_bytes:
        return "model offload"
    return "group offload"
