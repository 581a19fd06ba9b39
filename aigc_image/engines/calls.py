"""How to call a diffusers pipeline for a batch of requests: the keyword arguments of one call.

What each class needs is its row in engines/families.py (guidance, negative prompts, size multiple,
reference images, prompt lists); classes not in the table are read from their signature there.
The rules, each there because a pipeline would otherwise serve a request wrongly:

1. Prompts. Each request's prompt (and negative prompt) is repeated once per image it asked for,
   and every image gets its own generator seeded ``seed + i``, so a request's images are the
   same whether it runs alone or batched with others. A family without prompt lists (or an
   editing call, whose references apply to every prompt) serves one request per call.
2. Size. Passed exactly, rounded to the family's size multiple; the family's fixed options
   (HunyuanDiT's resolution binning off) are added.
3. Guidance, by the family's kind (families.py): ``guidance_scale``; ``true_cfg_scale`` with a " "
   negative prompt when the request has none; guider components replaced for the call, or
   ``distilled_guidance_scale`` on guidance-distilled checkpoints; none, refused.
4. Steps. A pipeline whose config fixes a sigma schedule (``sample_sigmas``: its length is the step
   count) gets that schedule resampled to the request's steps, so that steps do what they say.
5. Reference images. Image-to-image pipelines get the reference at the output size and a
   strength; their step count is raised to the least that still denoises (``steps × strength``
   ≥ 1), which one-step turbo models need. Editing pipelines get the references as they are
   (Qwen-Image 2.1 resizes them to the output's pixel count, not its fixed 1024 px default).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.families import cfg_of, distilled_guidance, family_of
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


def takes_prompt_lists(pipe: Any, editing: bool = False) -> bool:
    """Whether one call can serve several requests' prompts (an editing call's references apply to all)."""
    family = family_of(pipe)
    return family.prompt_lists and not (editing and family.references == "edit")


def size_multiple(pipe: Any) -> int:
    return family_of(pipe).size_multiple


def round_to(value: int, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def build_call(pipe: Any, requests: Sequence[GenerationRequest]) -> PipelineCall:
    first = requests[0]
    family = family_of(pipe)
    accepted = parameters(pipe)
    multiple = family.size_multiple
    width, height = round_to(first.width, multiple), round_to(first.height, multiple)
    call = PipelineCall({"output_type": "pil", **family.call_options}, width, height)
    kwargs = call.kwargs

    # 1. Prompts, negative prompts and one generator per image.
    prompts = [r.prompt for r in requests for _ in range(r.count)]
    negatives = [r.negative_prompt for r in requests for _ in range(r.count)]
    kwargs["generator"] = [_generator(r.seed, i) for r in requests for i in range(r.count)]
    if takes_prompt_lists(pipe, editing=bool(first.images)):
        kwargs["prompt"] = prompts
        negative: Any = negatives if any(negatives) else None
    else:
        if len(requests) > 1:
            raise ValueError(f"{type(pipe).__name__} takes one request per call")
        kwargs["prompt"] = first.prompt
        kwargs["num_images_per_prompt"] = first.count
        negative = first.negative_prompt or None

    # 2. Size.
    if "width" in accepted and "height" in accepted:
        kwargs["width"], kwargs["height"] = width, height

    # 3. Guidance.
    guidance = first.guidance_scale
    cfg = cfg_of(pipe, family)
    if cfg == "true_cfg":
        if distilled_guidance(pipe):
            kwargs["guidance_scale"] = guidance if guidance is not None else accepted["guidance_scale"].default
        else:
            scale = guidance if guidance is not None else accepted["true_cfg_scale"].default
            kwargs["true_cfg_scale"] = scale
            if scale > 1 and negative is None:
                negative = [" "] * len(prompts) if isinstance(kwargs["prompt"], list) else " "
            elif scale > 1 and isinstance(negative, list):
                negative = [n or " " for n in negative]
    elif cfg == "guider":
        if distilled_guidance(pipe):
            if guidance is not None:
                kwargs["distilled_guidance_scale"] = guidance
        elif guidance is not None:
            for name in ("guider", "ocr_guider"):
                guider = getattr(pipe, name, None)
                if guider is not None:
                    call.guiders[name] = guider.new(guidance_scale=guidance)
    elif cfg == "classic":
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
    elif guidance is not None:
        raise NotSupported(f"{family.name} ({type(pipe).__name__}) takes no guidance scale: it is step-distilled.")
    elif "guidance_scale" in accepted:  # the pipeline's default would be ignored, with a warning at every call
        kwargs["guidance_scale"] = 1.0
    if negative is not None:
        if not family.negative_prompt:
            raise NotSupported(f"{family.name} ({type(pipe).__name__}) takes no negative prompt.")
        kwargs["negative_prompt"] = negative

    # 4. Steps.
    kwargs["num_inference_steps"] = first.steps
    fixed = getattr(getattr(pipe, "config", None), "sample_sigmas", None)
    if fixed and len(fixed) != first.steps:
        kwargs["sigmas"] = resampled(list(fixed), first.steps)

    # 5. Reference images.
    if first.images:
        if family.references == "none":
            raise NotSupported(f"{family.name} ({type(pipe).__name__}) takes no reference images.")
        if family.references == "img2img":  # one reference per image, at the output size
            references = [r.images[0].resize((width, height), Image.Resampling.LANCZOS) for r in requests]
            kwargs["image"] = [ref for ref, r in zip(references, requests, strict=True) for _ in range(r.count)]
            strength = first.strength if first.strength is not None else accepted["strength"].default
            kwargs["strength"] = strength
            kwargs["num_inference_steps"] = max(first.steps, math.ceil(1 / strength - 1e-9))
            if "width" not in accepted:  # it takes the reference's size, already the output size
                kwargs.pop("height", None)
        else:  # editing: the references as they are; the pipeline sizes them for its encoders
            if len(first.images) > family.max_references:
                raise NotSupported(f"{family.name} takes at most {family.max_references} reference images.")
            kwargs["image"] = list(first.images)
            if "output_resolution" in accepted:  # Qwen-Image 2.1 sizes references to this side's area
                kwargs["output_resolution"] = round(math.sqrt(width * height))
    elif first.strength is not None:
        raise NotSupported("strength applies only with reference images.")
    return call


def resampled(sigmas: list[float], steps: int) -> list[float]:
    """A model's fixed sigma schedule stretched or shrunk to ``steps`` points, keeping its shape."""
    return [float(s) for s in np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, len(sigmas)), sigmas)]


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
