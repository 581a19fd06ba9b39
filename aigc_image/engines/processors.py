"""Multimodal processors without their video half, for hosts without torchvision.

Qwen2-VL's processor (used by the Qwen-Image edit pipelines to show the reference images to
the text encoder) bundles an image processor, the tokenizer and a video processor, and
transformers builds the video processor only with torchvision installed. CPU builds of PyTorch
often come without a matching torchvision, and image editing never uses the video half, so the
engine loads the processor as image processor + tokenizer there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen2VLProcessor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):  # type: ignore[misc]
    """A Qwen2VLProcessor of images and text only."""

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]


def needs_image_only_processor() -> bool:
    return importlib.util.find_spec("torchvision") is None


def load_image_only_processor(folder: Path) -> ImageOnlyQwen2VLProcessor:
    """The processor saved in ``folder`` (a pipeline's ``processor`` subfolder), minus video."""
    return ImageOnlyQwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor.from_pretrained(folder),
        tokenizer=AutoTokenizer.from_pretrained(folder),
    )
