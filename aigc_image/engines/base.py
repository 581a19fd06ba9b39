"""The Engine protocol: turn a generation request into images. Knows nothing of tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from aigc_image.engines.registry import ModelEntry

# Called after each denoising step with (steps done, total steps).
StepCallback = Callable[[int, int], None]


class ModelUnavailable(Exception):
    """The model's weights cannot be loaded; the message says what the operator should do."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    count: int
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None = None  # same seed and request → the same images on the same machine
    images: tuple[Image.Image, ...] = ()  # reference images: image-to-image or multi-reference editing
    strength: float | None = None  # image-to-image: how far from the reference (None: the pipeline's default)
    panorama: bool = False  # SceneType 3d_panorama: left and right edges join (circular padding along x)


class Engine(Protocol):
    def generate(self, entry: ModelEntry, request: GenerationRequest, on_step: StepCallback) -> list[Image.Image]: ...
