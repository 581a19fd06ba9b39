"""The Engine protocol: turn generation requests into images. Knows nothing of tasks.

An engine call takes a batch: one or more requests that can share one pipeline call (same
model, size, steps, guidance, sampler, adapters and kind; the worker groups them). Each request keeps its own
prompt, negative prompt, seed and image count, and gets back exactly its own images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from aigc_image.catalog import ModelEntry

# Called after each denoising step with (steps done, steps in all).
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    count: int
    width: int
    height: int
    steps: int
    guidance_scale: float | None  # None: the model's own default
    seed: int | None = None  # image i of the request comes from seed + i: reproducible, batched or not
    images: tuple[Image.Image, ...] = ()  # reference images: image-to-image or multi-reference editing
    strength: float | None = None  # image-to-image: how far from the reference (None: the pipeline's default)
    panorama: bool = False  # SceneType 3d_panorama: left and right edges join
    sampler: str | None = None  # AdditionalParameters sampler (None: the model's own scheduler)
    loras: tuple[tuple[str, float], ...] = ()  # AdditionalParameters loras: adapter scales over the entry's


class Engine(Protocol):
    def generate(
        self, entry: ModelEntry, requests: Sequence[GenerationRequest], on_step: StepCallback
    ) -> list[list[Image.Image]]:
        """The images of each request, in order: ``count`` of them each, at its width × height."""
        ...

    def load(self, entry: ModelEntry) -> None:
        """Load ``entry`` now (``worker.preload``); raises ModelUnavailable when it cannot."""
        ...

    def loaded(self) -> list[str]:
        """Labels of the models loaded right now."""
        ...
