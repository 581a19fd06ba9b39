"""Which size a request asks for, checked against what its model accepts.

Returns the size the model generates and the size delivered; the worker resizes from the
first to the second when they differ (media/sizes.py explains the rule).
"""

from __future__ import annotations

from aigc_image.catalog import ModelEntry
from aigc_image.media.sizes import ASPECT_RATIOS, SHORTER_SIDE, native_size, nearest_multiple, output_size
from aigc_image.protocol import errors

Size = tuple[int, int]


def resolve_size(
    entry: ModelEntry, aspect_ratio: str, resolution: str, size: Size | None, panorama: bool = False
) -> tuple[Size, Size]:
    """(generated, delivered) sizes for a request's AspectRatio, Resolution and AdditionalParameters size."""
    if panorama:
        return _panorama_size(entry, aspect_ratio, resolution, size)
    if size is not None:
        if aspect_ratio or resolution:
            raise errors.InvalidParameter(
                "Give either AdditionalParameters size or ExtraParameters AspectRatio/Resolution, not both."
            )
        _check_free_size(entry, size)
        return nearest_multiple(*size, entry.size_multiple), size
    native_pixels = entry.width * entry.height
    if not (aspect_ratio or resolution):
        return (entry.width, entry.height), (entry.width, entry.height)
    if aspect_ratio and aspect_ratio not in ASPECT_RATIOS:
        raise errors.InvalidParameterValue(
            f"ExtraParameters.AspectRatio must be one of {', '.join(ASPECT_RATIOS)}; got {aspect_ratio[:40]!r}."
        )
    if resolution and resolution not in SHORTER_SIDE:
        raise errors.InvalidParameterValue(
            "ExtraParameters.Resolution must be one of 720P, 1080P, 2K, 4K (1K on some models); "
            f"got {resolution[:40]!r}."
        )
    if aspect_ratio and aspect_ratio not in entry.aspect_ratios:
        raise errors.ModelNotSupported(
            f"Model {entry.label} does not support AspectRatio {aspect_ratio}; "
            f"it supports {', '.join(entry.aspect_ratios)}."
        )
    if resolution and resolution not in entry.resolutions:
        raise errors.ModelNotSupported(
            f"Model {entry.label} does not support Resolution {resolution}; it supports {', '.join(entry.resolutions)}."
        )
    if not resolution:  # the shape at the model's own pixel count
        generated = native_size(*ASPECT_RATIOS[aspect_ratio], native_pixels, entry.size_multiple)
        return generated, generated
    delivered = output_size(aspect_ratio or "1:1", resolution)
    return native_size(*delivered, native_pixels, entry.size_multiple), delivered


def _panorama_size(entry: ModelEntry, aspect_ratio: str, resolution: str, size: Size | None) -> tuple[Size, Size]:
    """Equirectangular: always 2:1. Resolution fixes the height; a free size must be 2:1."""
    if aspect_ratio:
        raise errors.InvalidParameter("SceneType 3d_panorama images are 2:1; leave out ExtraParameters.AspectRatio.")
    height = native_size(2, 1, entry.width * entry.height, entry.size_multiple)[1]
    generated = (2 * height, height)  # exactly 2:1, whatever the rounding
    if size is not None:
        if size[0] != 2 * size[1]:
            raise errors.InvalidParameterValue(f"SceneType 3d_panorama needs a 2:1 size; got {size[0]}x{size[1]}.")
        _check_free_size(entry, size)
        height = nearest_multiple(size[1], size[1], entry.size_multiple)[1]
        return (2 * height, height), size
    if resolution:
        if resolution not in entry.resolutions:
            raise errors.ModelNotSupported(f"Model {entry.label} does not support Resolution {resolution!r}.")
        return generated, (2 * SHORTER_SIDE[resolution], SHORTER_SIDE[resolution])
    return generated, generated


def _check_free_size(entry: ModelEntry, size: Size) -> None:
    width, height = size
    low, high = entry.size_min_side, entry.size_max_side
    problems = []
    if not (low <= width <= high and low <= height <= high):
        problems.append(f"each side must be between {low} and {high} pixels")
    if entry.size_max_pixels and width * height > entry.size_max_pixels:
        problems.append(f"width × height must be at most {entry.size_max_pixels} pixels")
    if entry.size_min_pixels and width * height < entry.size_min_pixels:
        problems.append(f"width × height must be at least {entry.size_min_pixels} pixels")
    if problems:
        raise errors.InvalidParameterValue(
            f"AdditionalParameters size {width}x{height} is out of range for model {entry.label}: "
            f"{'; '.join(problems)}.",
            param="AdditionalParameters.size",
        )
