"""Encode generated images into the requested file format, with their implicit AIGC label."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

from aigc_image.media.labels import label_json, xmp_packet

FORMATS = ("png", "jpeg")


def encode(image: Image.Image, output_format: str, label: dict[str, str] | None = None) -> bytes:
    """The image as ``output_format`` bytes; ``label`` (labels.implicit_label) goes into its metadata."""
    buffer = io.BytesIO()
    if output_format == "png":
        info = PngImagePlugin.PngInfo()
        if label is not None:
            info.add_itxt("AIGC", label_json(label))
            info.add_itxt("XML:com.adobe.xmp", xmp_packet(label).decode())
        image.save(buffer, format="PNG", compress_level=6, pnginfo=info)
    elif output_format == "jpeg":
        extra = {"xmp": xmp_packet(label)} if label is not None else {}
        opaque(image).save(buffer, format="JPEG", quality=92, **extra)
    else:
        raise ValueError(f"unsupported output format {output_format!r}")
    return buffer.getvalue()


def opaque(image: Image.Image) -> Image.Image:
    """The image as JPEG can hold it: transparency (Qwen-Image 2.1 makes RGBA images) over white,
    rather than dropped, which would show whatever colour the transparent pixels happen to have."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white
