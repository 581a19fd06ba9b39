"""Multimodal processors without their video half, for hosts without torchvision.

The Qwen-VL processors (used by the Qwen-Image edit pipelines and Qwen-Image 2.1 to show the
reference images, and the prompt, to the text encoder) bundle an image processor, the tokenizer
and a video processor, and transformers builds the video processor only with torchvision
installed. CPU builds of PyTorch often come without a matching torchvision, and image generation
never uses the video half, so the engine loads the processor as image processor + tokenizer there.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen3VLProcessor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):  # type: ignore[misc]
    """A Qwen2VLProcessor of images and text only."""

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):  # type: ignore[misc]
    """A Qwen3VLProcessor of images and text only (Qwen-Image 2.1)."""

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]


IMAGE_ONLY = {"Qwen2VLProcessor": ImageOnlyQwen2VLProcessor, "Qwen3VLProcessor": ImageOnlyQwen3VLProcessor}


def needs_image_only_processor() -> bool:
    return importlib.util.find_spec("torchvision") is None


def load_image_only_processor(folder: Path, class_name: str = "Qwen2VLProcessor") -> Any:
    """The processor saved in ``folder`` (a pipeline's ``processor`` subfolder), minus video."""
    template = folder / "chat_template.jinja"
    legacy = folder / "chat_template.json"
    chat_template = None
    if template.is_file():
        chat_template = template.read_text()
    elif legacy.is_file():
        chat_template = json.loads(legacy.read_text()).get("chat_template")
    return IMAGE_ONLY[class_name](
        image_processor=Qwen2VLImageProcessor.from_pretrained(folder),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        chat_template=chat_template,
    )
