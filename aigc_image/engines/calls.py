"""How to call a diffusers pipeline for a batch of requests: the keyword arguments of one call.

Read from the pipeline's own ``__call__`` signature and components rather than from its class
name, so an operator's model of a known family, or a new class with the same conventions, is
called right. Each rule exists because a pipeline would otherwise serve a request wrongly:

1. Prompts. Each request's prompt (and negative prompt) is repeated once per image it asked for,
   and every image gets its own generator seeded ``seed + i``, so a request's images are the
   same whether it runs alone or batched with others.
2. Size. Passed exactly, rounded to what the pipeline can make (its VAE's scale times the
   denoiser's patch); HunyuanDiT's resolution binning is turned off, since it would silently
   snap every size to one of its own.
3. Guidance, by family:
   * ``true_cfg_scale`` (Qwen-Image): the request's guidance is the true CFG scale, and a
     negative prompt must be given for it to apply at all (" " when the request has none, as
     the model card does);
   * guiders (HunyuanImage-2.1): guidance lives in the pipeline's guider components, which are
     replaced by copies with the request's ``guidance_scale`` for the call; a guidance-distilled
     model takes ``distilled_guidance_scale`` instead;
   * everything else: ``guidance_scale``.
4. Reference images. Image-to-image pipelines get the reference at the output size and a
   strength; their step count is raised to the least that still denoises (``steps × strength``
   ≥ 1), which one-step turbo models need. Editing pipelines get the references as they are.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from aigc_image.engines.base import GenerationRequest
from aigc_image.errors import NotSupported

MAX_SEED = 2**32 - 1


@dataclass
class PipelineCall:
    kwargs: dict[str, Any]
    width: int  # the size the pipeline generates at
    height: int
    guiders: dict[str, Any] = field(default_factory=dict)  # components replaced for the call


def parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def takes_prompt_lists(pipe: Any) -> bool:
    """Whether one call can serve several prompts (QwenImageEditPlusPipeline cannot)."""
    return type(pipe).__name__ != "QwenImageEditPlusPipeline"


def size_multiple(pipe: Any) -> int:
    """What the pipeline's sides must be multiples of: its VAE's scale times the denoiser's patch."""
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    denoiser = getattr(pipe, "transformer", None)
    patch = getattr(getattr(denoiser, "config", None), "patch_size", 1) or 1
    if isinstance(patch, list | tuple):
        patch = max(patch)
    return vae_scale * int(patch)


def round_to(value: int, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def build_call(pipe: Any, requests: Sequence[GenerationRequest]) -> PipelineCall:
    first = requests[0]
    accepted = parameters(pipe)
    multiple = size_multiple(pipe)
    width, height = round_to(first.width, multiple), round_to(first.height, multiple)
    call = PipelineCall({"output_type": "pil"}, width, height)
    kwargs = call.kwargs

    # 1. Prompts, negative prompts and one generator per image.
    prompts = [r.prompt for r in requests for _ in range(r.count)]
    negatives = [r.negative_prompt for r in requests for _ in range(r.count)]
    kwargs["generator"] = [_generator(r.seed, i) for r in requests for i in range(r.count)]
    if takes_prompt_lists(pipe):
        kwargs["prompt"] = prompts
        negative: Any = negatives if any(negatives) else None
    else:
        if len(requests) > 1:
            raise ValueError(f"{type(pipe).__name__} takes one prompt per call")
        kwargs["prompt"] = first.prompt
        kwargs["num_images_per_prompt"] = first.count
        negative = first.negative_prompt or None

    # 2. Size.
    if "width" in accepted and "height" in accepted:
        kwargs["width"], kwargs["height"] = width, height
    if "use_resolution_binning" in accepted:
        kwargs["use_resolution_binning"] = False

    # 3. Guidance.
    guidance = first.guidance_scale
    distilled = bool(getattr(getattr(getattr(pipe, "transformer", None), "config", None), "guidance_embeds", False))
    if "true_cfg_scale" in accepted:
        if distilled:
            kwargs["guidance_scale"] = guidance if guidance is not None else accepted["guidance_scale"].default
        else:
            scale = guidance if guidance is not None else accepted["true_cfg_scale"].default
            kwargs["true_cfg_scale"] = scale
            if scale > 1 and negative is None:
                negative = [" "] * len(prompts) if isinstance(kwargs["prompt"], list) else " "
            elif scale > 1 and isinstance(negative, list):
                negative = [n or " " for n in negative]
    elif "distilled_guidance_scale" in accepted:
        if distilled:
            if guidance is not None:
                kwargs["distilled_guidance_scale"] = guidance
        elif guidance is not None:
            for name in ("guider", "ocr_guider"):
                guider = getattr(pipe, name, None)
                if guider is not None:
                    call.guiders[name] = guider.new(guidance_scale=guidance)
    elif guidance is not None:
        if "guidance_scale" not in accepted:
            raise NotSupported(f"{type(pipe).__name__} takes no guidance scale.")
        kwargs["guidance_scale"] = guidance
    if negative is not None:
        if "negative_prompt" not in accepted:
            raise NotSupported(f"{type(pipe).__name__} takes no negative prompt.")
        kwargs["negative_prompt"] = negative

    # 4. Reference images and steps.
    kwargs["num_inference_steps"] = first.steps
    if first.images:
        if "image" not in accepted:
            raise NotSupported(f"{type(pipe).__name__} takes no reference images.")
        if "strength" in accepted:  # image-to-image: one reference per image, at the output size
            references = [r.images[0].resize((width, height), Image.Resampling.LANCZOS) for r in requests]
            kwargs["image"] = [ref for ref, r in zip(references, requests, strict=True) for _ in range(r.count)]
            strength = first.strength if first.strength is not None else accepted["strength"].default
            kwargs["strength"] = strength
            kwargs["num_inference_steps"] = max(first.steps, math.ceil(1 / strength - 1e-9))
            if "width" not in accepted:  # it takes the reference's size, already the output size
                kwargs.pop("height", None)
        else:  # editing: the references as they are; the pipeline sizes them for its encoders
            kwargs["image"] = list(first.images)
    elif first.strength is not None:
        raise NotSupported("strength applies only with reference images.")
    return call


def _generator(seed: int | None, index: int) -> torch.Generator:
    """A CPU generator: the initial noise is then the same whatever device runs the pipeline."""
    generator = torch.Generator("cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((seed + index) % (MAX_SEED + 1))
    return generator


@contextmanager
def components_replaced(pipe: Any, replacements: dict[str, Any]) -> Iterator[None]:
    """``pipe`` with some components swapped for the length of one call (guiders with a request's
    guidance scale), then restored."""
    originals = {name: getattr(pipe, name) for name in replacements}
    try:
        for name, component in replacements.items():
            setattr(pipe, name, component)
        yield
    finally:
        for name, component in originals.items():
            setattr(pipe, name, component)
