"""Image sizes: what a request asks for, and the size a model should generate to deliver it.

``ExtraParameters.AspectRatio`` × ``Resolution`` name an exact output size (the table in
docs/protocol.md is printed from ``OUTPUT_SIZES``): the resolution fixes the shorter side, the
ratio the longer one, rounded to an even number. A model generates at its own native pixel
count in the requested shape, with sides rounded to the multiple it requires; the worker
resizes to the requested size when the two differ.
"""

from __future__ import annotations

import math
from typing import get_args

from aigc_image.tasks import AspectRatio

# "16:9" → (16, 9), for every ratio the API names, in its order.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    ratio: (int(ratio.split(":")[0]), int(ratio.split(":")[1])) for ratio in get_args(AspectRatio)
}
SHORTER_SIDE: dict[str, int] = {"720P": 720, "1K": 1024, "1080P": 1080, "2K": 1440, "4K": 2160}


def output_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """The exact (width, height) of ``aspect_ratio`` at ``resolution``."""
    across, down = ASPECT_RATIOS[aspect_ratio]
    short = SHORTER_SIDE[resolution]
    long = 2 * round(short * max(across, down) / min(across, down) / 2)
    return (long, short) if across >= down else (short, long)


OUTPUT_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    (ratio, resolution): output_size(ratio, resolution) for resolution in SHORTER_SIDE for ratio in ASPECT_RATIOS
}


def native_size(width: int, height: int, pixels: int, multiple: int) -> tuple[int, int]:
    """A size of about ``pixels`` pixels in the shape ``width``:``height``, sides a multiple of ``multiple``."""
    shape = width / height
    native_height = math.sqrt(pixels / shape)
    return _round_to(native_height * shape, multiple), _round_to(native_height, multiple)


def nearest_multiple(width: int, height: int, multiple: int) -> tuple[int, int]:
    return _round_to(width, multiple), _round_to(height, multiple)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))
