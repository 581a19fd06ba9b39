"""Run diffusers pipelines: load them (engines/loading.py), keep them loaded, call them.

The most recently used models stay loaded, up to ``max_loaded``; a model's editing pipeline
(``ImageInfos``) stays with it. A model whose registry entry promises what its pipeline cannot do
(engines/families.py, ``disagreements``) refuses to load, saying which key to change. One call
serves a batch of requests (engines/calls.py says how each pipeline class is called), with the
batch's sampler and LoRA adapter scales set for that call only; out of memory ends the call with
``OutOfMemory`` after the memory is freed, so the worker goes on with the next task.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from aigc_image.catalog import ModelEntry
from aigc_image.engines.accelerate import accelerate, rearm
from aigc_image.engines.adapters import adapters_set, scales
from aigc_image.engines.base import GenerationRequest, StepCallback
from aigc_image.engines.calls import build_call, components_replaced, takes_prompt_lists
from aigc_image.engines.families import disagreements, family_of
from aigc_image.engines.loading import load_image_pipeline, load_pipeline, modules, pick_device, place, weight_bytes
from aigc_image.engines.samplers import sampler_set
from aigc_image.engines.seamless import LatentRoller, convolutional_parts, seamless_x
from aigc_image.errors import ModelUnavailable, NotSupported, OutOfMemory

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: Any
    placement: str
    image_pipeline: Any = None

    def device_bytes(self) -> int:
        """Bytes of weights this model keeps on the GPU (none when offloaded)."""
        if self.placement != "resident":
            return 0
        parts = {id(m): m for p in (self.pipeline, self.image_pipeline) if p is not None for m in modules(p).values()}
        return sum(weight_bytes(m) for m in parts.values())


class DiffusersEngine:
    def __init__(self, device: str = "auto", allow_download: bool = True, max_loaded: int = 2) -> None:
        self.device = pick_device(device)
        self._allow_download = allow_download
        self._max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()

    # -- models ------------------------------------------------------------------------

    def load(self, entry: ModelEntry) -> None:
        self._model(entry)

    def loaded(self) -> list[str]:
        return [model.entry.label for model in self._loaded.values()]

    def memory_in_use(self) -> int | None:
        """Bytes of GPU memory this process's tensors hold (None on a CPU)."""
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else None

    def pipeline(self, entry: ModelEntry, images: bool = False) -> Any:
        """The loaded pipeline of ``entry`` (loading it if needed): the one for ``ImageInfos`` with ``images``."""
        model = self._model(entry)
        return self._image_pipeline(model) if images else model.pipeline

    def _model(self, entry: ModelEntry) -> LoadedModel:
        key = f"{entry.label}@{entry.source}"
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        while len(self._loaded) >= self._max_loaded:
            _, evicted = self._loaded.popitem(last=False)
            log.info("unloading %s", evicted.entry.label)
            del evicted
            self._free()
        started = time.monotonic()
        log.info("loading %s from %s on %s", entry.label, entry.source or "code", self.device)
        try:
            pipe = load_pipeline(entry, self.device, self._allow_download)
            if problems := disagreements(entry, pipe):
                raise ModelUnavailable(f"Model {entry.label}: its registry entry does not fit {type(pipe).__name__}: "
                                       + "; ".join(problems) + ".")  # fmt: skip
            pipe.set_progress_bar_config(disable=True)
            placement = place(pipe, entry, self.device, self._device_bytes())
            applied = accelerate(pipe, entry)
        except torch.OutOfMemoryError:
            self._free()
            raise OutOfMemory(f"Model {entry.label} does not fit in the memory of {self.device}.") from None
        log.info("loaded %s in %.1f s (%s)", entry.label, time.monotonic() - started, ", ".join([placement, *applied]))
        model = self._loaded[key] = LoadedModel(entry, pipe, placement)
        if entry.compile:
            self._warm_up(entry)
        return model

    def _warm_up(self, entry: ModelEntry) -> None:
        """Compile now, at the native size, so that no task pays for it."""
        started = time.monotonic()
        request = GenerationRequest("warm-up", "", 1, entry.width, entry.height, min(2, entry.steps), None, seed=0)
        self.generate(entry, [request], lambda _done, _total: None)
        log.info("compiled %s in %.1f s", entry.label, time.monotonic() - started)

    def _image_pipeline(self, model: LoadedModel) -> Any:
        if model.image_pipeline is None:
            entry = model.entry
            pipe = load_image_pipeline(entry, model.pipeline, self.device, self._allow_download)
            pipe.set_progress_bar_config(disable=True)
            if entry.image_source:
                others = self._device_bytes() - model.device_bytes()
                if model.placement == "resident":
                    placement = place(pipe, entry, self.device, others + model.device_bytes())
                    if placement != "resident":
                        log.warning("model %s: its editing pipeline does not fit beside it", entry.label)
                else:
                    place(pipe, entry, self.device, others)
            model.image_pipeline = pipe
        return model.image_pipeline

    def _device_bytes(self) -> int:
        return sum(model.device_bytes() for model in self._loaded.values())

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- generation ------------------------------------------------------------------------

    def generate(
        self, entry: ModelEntry, requests: Sequence[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        first = requests[0]
        pipe = self.pipeline(entry, images=bool(first.images))
        if len(requests) > 1 and not takes_prompt_lists(pipe, editing=bool(first.images)):  # one call per request
            return [images for request in requests for images in self.generate(entry, [request], on_step)]
        call = build_call(pipe, requests)
        rearm(pipe, entry, first.steps)
        roller: LatentRoller | None = None
        if first.panorama and getattr(pipe, "unet", None) is None:  # a transformer: roll its latents
            roller = _roller(pipe, call.width, call.height, first.steps)
            call.kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]

        def step_end(the_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(the_pipe, "num_timesteps", 0) or first.steps)
            on_step(step + 1, total)
            if roller is not None:
                return {"latents": roller.after_step(tensors["latents"], last=step + 1 >= total)}
            return tensors

        call.kwargs["callback_on_step_end"] = step_end
        seam = seamless_x(*convolutional_parts(pipe)) if first.panorama else contextlib.nullcontext()
        large = call.width * call.height > entry.width * entry.height and not first.panorama
        sampler = sampler_set(pipe, family_of(pipe).schedulers, first.sampler)
        adapters = adapters_set(pipe, entry, scales(entry, dict(first.loras)))
        try:
            with torch.inference_mode(), seam, components_replaced(pipe, call.guiders), _vae_tiling(pipe, large), \
                    sampler, adapters:  # fmt: skip
                images: list[Image.Image] = pipe(**call.kwargs).images
        except torch.OutOfMemoryError:
            self._free()
            size = f"{call.width}x{call.height}"
            count = sum(r.count for r in requests)
            raise OutOfMemory(
                f"{self.device} ran out of memory generating {count} image(s) at {size} with {entry.label}; "
                "ask for fewer or smaller images."
            ) from None
        expected = sum(r.count for r in requests)
        if len(images) != expected:
            raise RuntimeError(f"pipeline returned {len(images)} images, expected {expected}")
        wrong = {image.size for image in images} - {(call.width, call.height)}
        if wrong:  # never stretch a wrongly shaped image into the size asked for
            raise NotSupported(
                f"{type(pipe).__name__} made {'x'.join(map(str, wrong.pop()))} images when asked for "
                f"{call.width}x{call.height}; model {entry.label} cannot serve this size."
            )
        split: list[list[Image.Image]] = []
        for request in requests:
            split.append(images[: request.count])
            images = images[request.count :]
        return split


def _roller(pipe: Any, width: int, height: int, steps: int) -> LatentRoller:
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    latents = family_of(pipe).latents
    if latents == "none":
        raise NotSupported(f"{family_of(pipe).name} cannot make panoramas.")
    packed = latents == "packed"  # latents as a sequence of 2×2 patches (Qwen-Image, FLUX.2)
    return LatentRoller(width // scale, steps, packed_patch=2 if packed else 0, latent_height=height // scale)


@contextlib.contextmanager
def _vae_tiling(pipe: Any, on: bool) -> Any:
    """Above a model's native size, decode in tiles: bounded memory for any output size."""
    vae: Any = getattr(pipe, "vae", None)
    if not (on and hasattr(vae, "enable_tiling")):
        yield
        return
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()
