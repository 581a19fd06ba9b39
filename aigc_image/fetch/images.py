"""Decode a downloaded reference image, refusing anything but a plain JPEG, PNG or WebP.

Only those decoders are tried; the pixel count is checked from the header, before any pixel
is decoded (decompression bombs), with Pillow's own bomb warning made an error; truncated
files are refused; only the first frame of an animation is used.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from aigc_image.fetch.fetcher import FetchRefused

FORMATS = ("JPEG", "PNG", "WEBP")


def decode_reference(data: bytes, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise FetchRefused(f"the image is {width}×{height} pixels; the limit is {max_pixels} pixels")
            image.seek(0)
            image.load()
        except FetchRefused:
            raise
        except UnidentifiedImageError:
            raise FetchRefused("the file is not a JPEG, PNG or WebP image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise FetchRefused(f"the image is too large to decode: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise FetchRefused(f"the image cannot be decoded: {exc}") from None
    return image.convert("RGB")
