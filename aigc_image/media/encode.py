"""Encode generated images into the requested file format."""

from __future__ import annotations

import io

from PIL import Image

FORMATS = ("png", "jpeg")


def encode(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=6)
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    else:
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()
