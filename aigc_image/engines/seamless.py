"""Seamless left–right edges for ``SceneType: 3d_panorama``: circular padding along x.

While the context is active, every padded 2-D convolution of the given modules (the UNet and
the VAE) pads its input circularly along the width and with zeros along the height, so the
network sees the image as a cylinder: the generated image is the same whichever column the
seam falls on, and its left and right edges join. The layers are restored on exit, so other
tasks on the same loaded pipeline are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


@contextmanager
def seamless_x(*modules: torch.nn.Module) -> Iterator[None]:
    patched: list[torch.nn.Conv2d] = []
    try:
        for module in modules:
            for layer in module.modules():
                if _pads_width(layer):
                    layer._conv_forward = _circular_in_x(layer)
                    patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer._conv_forward  # back to the class's method


def _pads_width(layer: torch.nn.Module) -> bool:
    return (
        isinstance(layer, torch.nn.Conv2d)
        and isinstance(layer.padding, tuple)
        and layer.padding[1] > 0
        and layer.padding_mode == "zeros"
    )


def _circular_in_x(layer: torch.nn.Conv2d) -> Any:
    pad_y, pad_x = layer.padding

    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = F.pad(x, (pad_x, pad_x, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, pad_y, pad_y))
        return F.conv2d(x, weight, bias, layer.stride, 0, layer.dilation, layer.groups)

    return forward


def convolutional_parts(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's denoiser and VAE, whichever it has."""
    parts = [getattr(pipe, name, None) for name in ("unet", "transformer", "vae")]
    return [part for part in parts if isinstance(part, torch.nn.Module)]
