"""Seamless left–right edges for ``SceneType: 3d_panorama``.

Two mechanisms, used together where they apply:

1. **Circular padding along x** (``seamless_x``). While active, every padded convolution of the
   given modules (a UNet, a VAE) pads its input circularly along the width and with zeros along
   the height, so the network sees the image as a cylinder. For a convolutional denoiser this
   alone makes the panorama seamless: the result is the same whichever column the seam falls
   on. Covers ``nn.Conv2d`` and the causal 3-D convolutions of Qwen-Image's VAE, which pad
   themselves (``_padding``). Layers are restored on exit, so other tasks are unaffected.

2. **Rolling the latents between steps** (``LatentRoller``), for transformer denoisers, whose
   attention sees the whole image and whose position embeddings make the first and last columns
   edges. After each step the latents are shifted circularly along x, so every column, the seam
   included, is denoised in the interior of the image for most steps; at the end they are rolled
   back, so the image is where it would have been. The VAE decodes with circular padding (1.).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


@contextmanager
def seamless_x(*modules: torch.nn.Module) -> Iterator[None]:
    patched: list[torch.nn.Module] = []
    try:
        for module in modules:
            for layer in module.modules():
                if _pads_width(layer):
                    layer._conv_forward = _circular_conv2d(layer)
                    patched.append(layer)
                elif _pads_itself_in_width(layer):
                    layer.forward = _circular_causal_conv3d(layer)
                    patched.append(layer)
        yield
    finally:
        for layer in patched:
            for name in ("_conv_forward", "forward"):
                layer.__dict__.pop(name, None)  # back to the class's methods


def _pads_width(layer: torch.nn.Module) -> bool:
    return (
        type(layer) is torch.nn.Conv2d
        and isinstance(layer.padding, tuple)
        and layer.padding[1] > 0
        and layer.padding_mode == "zeros"
    )


def _pads_itself_in_width(layer: torch.nn.Module) -> bool:
    """Qwen-Image's causal Conv3d: zero padding 0 in the layer, its own ``_padding`` applied first."""
    padding = getattr(layer, "_padding", None)
    return isinstance(layer, torch.nn.Conv3d) and isinstance(padding, tuple) and len(padding) == 6 and padding[0] > 0


def _circular_conv2d(layer: torch.nn.Conv2d) -> Any:
    pad_y, pad_x = layer.padding

    def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = F.pad(x, (pad_x, pad_x, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, pad_y, pad_y))
        return F.conv2d(x, weight, bias, layer.stride, 0, layer.dilation, layer.groups)

    return conv_forward


def _circular_causal_conv3d(layer: torch.nn.Conv3d) -> Any:
    original = type(layer).forward
    left, right, *rest = layer._padding

    def forward(x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        # Wrap along x here; the layer then pads only height and time, as it always does.
        x = torch.cat([x[..., -left:], x, x[..., :right]], dim=-1)
        layer._padding = (0, 0, *rest)
        try:
            return original(layer, x, cache_x)
        finally:
            layer._padding = (left, right, *rest)

    return forward


def convolutional_parts(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's UNet and VAE, whichever it has (a transformer denoiser has no padded convs)."""
    parts = [getattr(pipe, name, None) for name in ("unet", "vae")]
    return [part for part in parts if isinstance(part, torch.nn.Module)]


class LatentRoller:
    """Shifts a pipeline's latents circularly along x after every denoising step, then back.

    ``packed_patch`` is the patch size of pipelines whose latents are packed into a sequence of
    ``patch × patch`` tokens (Qwen-Image: 2), read from the latent grid's width; 0 for latents
    kept as images ``(batch, channels, height, width)``.
    """

    def __init__(self, latent_width: int, steps: int, packed_patch: int = 0, latent_height: int = 0) -> None:
        unit = packed_patch or 1
        self.columns = latent_width // unit  # positions the latents can roll by
        self.rows = latent_height // unit
        self.packed = packed_patch > 0
        # About one full turn over the whole run, in equal whole-column steps.
        self.shift = max(1, round(self.columns / max(1, steps))) if steps > 1 else 0
        self.total = 0

    def roll(self, latents: torch.Tensor, by: int) -> torch.Tensor:
        if by % self.columns == 0:
            return latents
        if not self.packed:
            return torch.roll(latents, shifts=by, dims=-1)
        batch, tokens, features = latents.shape
        grid = latents.reshape(batch, self.rows, self.columns, features)
        return torch.roll(grid, shifts=by, dims=2).reshape(batch, tokens, features)

    def after_step(self, latents: torch.Tensor, last: bool) -> torch.Tensor:
        """The latents for the next step: shifted once more, or, after the last, rolled back home."""
        if last:
            back = -self.total
            self.total = 0
            return self.roll(latents, back)
        self.total += self.shift
        return self.roll(latents, self.shift)
