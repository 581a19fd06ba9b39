"""Samplers a request may choose (``AdditionalParameters`` ``sampler``), by the names A1111 and
ComfyUI users know, mapped to diffusers schedulers.

Each name is a scheduler class and the settings that make it that sampler, built with
``from_config`` from the model's own scheduler configuration, so its training settings (beta
schedule, prediction type, timestep spacing, flow shift) are kept. The Stable Diffusion family's
discrete-time models (``ddpm``) offer all of them; flow-matching models (``flow``) the ones that
work with flow sigmas and the schedules their pipelines pass.

The swap is per call: ``sampler_set`` puts a fresh scheduler on the pipeline for one call and puts
the model's own back afterwards, whatever happens, so a choice never leaks into the next task.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import diffusers

from aigc_image.catalog import Sampler
from aigc_image.errors import NotSupported

Schedulers = Literal["ddpm", "flow"]  # a model family's kind of scheduler (engines/families.py)

# name → (scheduler class, settings over the model's own configuration)
DDPM: dict[Sampler, tuple[str, Mapping[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}
    ),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
}  # fmt: skip
FLOW: dict[Sampler, tuple[str, Mapping[str, Any]]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    "Euler a": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),  # fresh noise at each step
    "UniPC": ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}
SAMPLERS: dict[Schedulers, dict[Sampler, tuple[str, Mapping[str, Any]]]] = {"ddpm": DDPM, "flow": FLOW}


def offered(kind: Schedulers) -> list[Sampler]:
    """The samplers models of a scheduler kind can offer."""
    return list(SAMPLERS[kind])


def scheduler_for(own: Any, kind: Schedulers, name: str) -> Any:
    """A new scheduler for sampler ``name``, from the model's own scheduler ``own``."""
    if name not in SAMPLERS[kind]:  # the API refuses these; a task stored before a registry change lands here
        raise NotSupported(f"Sampler {name!r} is not one this model's kind offers: {', '.join(SAMPLERS[kind])}.")
    class_name, settings = SAMPLERS[kind][name]
    config = dict(own.config)
    if kind == "flow" and class_name != type(own).__name__:  # the same shift under the other class's name
        config["flow_shift"] = config.pop("shift", 1.0)
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    return getattr(diffusers, class_name).from_config(config, **settings)


@contextmanager
def sampler_set(pipe: Any, kind: Schedulers, name: str | None) -> Iterator[None]:
    """``pipe`` with sampler ``name`` for the length of one call (None: the model's own)."""
    if name is None:
        yield
        return
    own = pipe.scheduler
    pipe.scheduler = scheduler_for(own, kind, name)
    try:
        yield
    finally:
        pipe.scheduler = own
