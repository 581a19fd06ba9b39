"""Run diffusers pipelines: load with ``from_pretrained``, keep them loaded, generate.

Pipelines load on CUDA in half precision when a GPU is present, else on the CPU in
float32 (half precision on CPUs is slow or unsupported). The most recently used
pipelines stay loaded, up to ``max_loaded``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from aigc_image.engines.base import GenerationRequest, ModelUnavailable, StepCallback
from aigc_image.engines.registry import ModelEntry
from aigc_image.engines.seamless import convolutional_parts, seamless_x
from aigc_image.engines.tiny_random import build_pipeline

log = logging.getLogger(__name__)


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def pick_dtype(entry: ModelEntry, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    if entry.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype: torch.dtype = getattr(torch, entry.dtype)
    return dtype


class DiffusersEngine:
    def __init__(self, device: str = "auto", allow_download: bool = True, max_loaded: int = 2) -> None:
        self.device = pick_device(device)
        self._allow_download = allow_download
        self._max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, diffusers.DiffusionPipeline] = OrderedDict()
        self._image_pipelines: dict[str, diffusers.DiffusionPipeline] = {}  # views of loaded ones: no memory

    def generate(self, entry: ModelEntry, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]:
        pipe = self.pipeline(entry)
        if request.images:
            pipe = self._image_pipeline(entry, pipe)

        def step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, request.steps)
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": request.steps,
            "width": request.width,
            "height": request.height,
            "num_images_per_prompt": request.count,
            "callback_on_step_end": step_end,
        }
        if request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        if request.guidance_scale is not None:
            kwargs["guidance_scale"] = request.guidance_scale
        if request.images:
            kwargs.update(_reference_arguments(pipe, request))
            accepted = inspect.signature(pipe.__call__).parameters
            for size in ("width", "height"):  # image-to-image takes the reference's size, already the target
                if size not in accepted:
                    del kwargs[size]
        if request.seed is not None:
            # A CPU generator: the initial noise is then the same whatever device runs the pipeline.
            kwargs["generator"] = torch.Generator("cpu").manual_seed(request.seed)
        seam = seamless_x(*convolutional_parts(pipe)) if request.panorama else contextlib.nullcontext()
        with torch.inference_mode(), seam:
            images: list[Image.Image] = pipe(**kwargs).images
        if len(images) != request.count:
            raise RuntimeError(f"pipeline returned {len(images)} images, expected {request.count}")
        return images

    def _image_pipeline(self, entry: ModelEntry, base: diffusers.DiffusionPipeline) -> diffusers.DiffusionPipeline:
        """The image-to-image (or editing) pipeline sharing ``base``'s loaded components."""
        key = f"{entry.label}@{entry.source}:images"
        if key not in self._image_pipelines:
            pipeline_class: Any = getattr(diffusers, entry.image_pipeline, None)
            if not hasattr(pipeline_class, "from_pipe"):
                raise ModelUnavailable(
                    f"Model {entry.label}: diffusers has no pipeline class {entry.image_pipeline!r} for reference "
                    "images; fix 'image_pipeline' in the model registry."
                )
            pipe = pipeline_class.from_pipe(base)
            pipe.set_progress_bar_config(disable=True)
            self._image_pipelines[key] = pipe
        return self._image_pipelines[key]

    def pipeline(self, entry: ModelEntry) -> diffusers.DiffusionPipeline:
        """The loaded pipeline for ``entry``, loading it (and evicting the oldest) if needed."""
        key = f"{entry.label}@{entry.source}"
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        while len(self._loaded) >= self._max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            self._image_pipelines.pop(f"{evicted}:images", None)
            log.info("unloading %s", evicted)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        log.info("loading %s from %s on %s", entry.label, entry.source or "code", self.device)
        pipe = self._load(entry)
        pipe.set_progress_bar_config(disable=True)
        self._loaded[key] = pipe
        return pipe

    def _load(self, entry: ModelEntry) -> diffusers.DiffusionPipeline:
        if entry.engine == "tiny-random":
            return build_pipeline().to(self.device)
        pipeline_class = getattr(diffusers, entry.pipeline, None)
        if not (isinstance(pipeline_class, type) and hasattr(pipeline_class, "from_pretrained")):
            raise ModelUnavailable(
                f"Model {entry.label}: diffusers has no pipeline class {entry.pipeline!r} "
                f"(installed diffusers {diffusers.__version__}); fix 'pipeline' in the model registry."
            )
        local = _is_local(entry.source)
        if local and not Path(entry.source).is_dir():
            raise ModelUnavailable(
                f"Model {entry.label}: the weights directory {entry.source} does not exist; "
                "put a diffusers model folder there or fix 'source' in the model registry."
            )
        try:
            pipe = pipeline_class.from_pretrained(
                entry.source,
                dtype=pick_dtype(entry, self.device),
                local_files_only=local or not self._allow_download,
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(_missing_weights_message(entry, local, self._allow_download, exc)) from exc
        return pipe.to(self.device)


def _reference_arguments(pipe: diffusers.DiffusionPipeline, request: GenerationRequest) -> dict[str, Any]:
    """The reference image(s), at the generation size, and the strength, where the pipeline takes them."""
    images = [image.resize((request.width, request.height), Image.Resampling.LANCZOS) for image in request.images]
    accepted = inspect.signature(pipe.__call__).parameters
    arguments: dict[str, Any] = {"image": images[0] if len(images) == 1 else images}
    if request.strength is not None and "strength" in accepted:
        arguments["strength"] = request.strength
    return arguments


def _is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).is_dir()


def _missing_weights_message(entry: ModelEntry, local: bool, allow_download: bool, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if local:
        return (
            f"Model {entry.label}: cannot load the diffusers model in {entry.source}: {reason}. "
            "Check that the folder holds a complete diffusers model (model_index.json and its components)."
        )
    how = (
        f"Download them where the Hub is reachable with `hf download {entry.source}` and copy the Hugging Face "
        f"cache (HF_HOME) to this host, or set 'source' in the model registry to a local diffusers folder."
    )
    if allow_download:
        return (
            f"Model {entry.label}: the weights of {entry.source} are not cached here "
            f"and could not be downloaded ({reason}). {how}"
        )
    return (
        f"Model {entry.label}: the weights of {entry.source} are not in the local Hugging Face cache and "
        f"downloads are disabled (models.allow_download = false). {how}"
    )
