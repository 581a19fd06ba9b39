"""Accelerations a catalogue entry turns on, applied to its loaded pipeline.

* ``compile``: ``torch.compile`` of the denoiser's repeated blocks (diffusers' regional
  compilation, which compiles one block and reuses it: seconds instead of minutes), or of the whole
  denoiser where the model declares no repeated blocks. A first call at load pays the compile time,
  which is logged, so no task does.
* ``cache``: diffusers' caching of the denoiser's work between steps: ``first_block`` (First Block
  Cache: skip the rest of the network when the first block's output barely changed),
  ``taylorseer`` (predict features from earlier steps with a Taylor expansion) or ``mag``
  (MagCache: skip steps whose residual magnitude ratio is predictable; needs calibrated
  ``mag_ratios``, which are per step: ``rearm`` fits them to each call's step count).
  ``cache_options`` are passed to the method's diffusers config.
* ``channels_last``: the channels-last memory layout for a UNet's convolutions (faster on GPUs).

Each changes the pixels a little (docs/models.md has the measured differences), so all are off
unless an entry turns them on. A model that cannot take one refuses to load, naming it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

from aigc_image.catalog import ModelEntry
from aigc_image.errors import ModelUnavailable

CACHE_CONFIGS: dict[str, Any] = {
    "first_block": FirstBlockCacheConfig,
    "taylorseer": TaylorSeerCacheConfig,
    "mag": MagCacheConfig,
}


def accelerate(pipe: Any, entry: ModelEntry) -> list[str]:
    """Apply the entry's accelerations to ``pipe``; returns what was applied."""
    denoiser = _denoiser(pipe)
    if denoiser is None:
        if entry.accelerations:
            raise ModelUnavailable(f"Model {entry.label}: {type(pipe).__name__} has no denoiser to accelerate.")
        return []
    if entry.channels_last:
        if getattr(pipe, "unet", None) is None:
            raise ModelUnavailable(
                f"Model {entry.label}: channels_last is for UNets; {type(denoiser).__name__} is not one."
            )
        denoiser.to(memory_format=torch.channels_last)
    if entry.cache != "none":
        if not hasattr(denoiser, "enable_cache"):
            raise ModelUnavailable(
                f"Model {entry.label}: {type(denoiser).__name__} cannot cache its work between steps; "
                'set cache = "none" in the model registry.'
            )
        _enable_cache(denoiser, entry, entry.steps)
    if entry.compile:
        if getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=True)
        else:
            denoiser.compile()
    return entry.accelerations


def rearm(pipe: Any, entry: ModelEntry, steps: int) -> None:
    """Before a call of ``steps`` steps: MagCache's schedule is set for one step count."""
    denoiser = _denoiser(pipe)
    if entry.cache == "mag" and getattr(denoiser, "_mag_cache_steps", steps) != steps:
        denoiser.disable_cache()
        _enable_cache(denoiser, entry, steps)


def _enable_cache(denoiser: Any, entry: ModelEntry, steps: int) -> None:
    options = dict(entry.cache_options)
    if entry.cache == "mag":
        options["num_inference_steps"] = steps
        denoiser._mag_cache_steps = steps
    try:
        denoiser.enable_cache(CACHE_CONFIGS[entry.cache](**options))
    except (TypeError, ValueError) as exc:
        raise ModelUnavailable(f"Model {entry.label}: cache {entry.cache}: {exc}") from exc


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
