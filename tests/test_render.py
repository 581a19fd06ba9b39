"""The stored bytes of an image, made in child processes so that Pillow's PNG encoder (which holds
the GIL) never stalls the thread that drives the GPU."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from PIL import Image

from aigc_image.media.labels import implicit_label
from aigc_image.tasks import TaskSpec
from aigc_image.worker.render import Renderer, render

SPEC = TaskSpec("tiny-random", "1", "a lighthouse", "", 1, "png", 64, 64, 2, 6.0, "", seed=1)
LABEL = implicit_label("aigc-image", "task-0")


@pytest.fixture
def renderer() -> Iterator[Renderer]:
    pool = Renderer(2)
    pool.start()
    assert len(pool._current()._processes) == 2  # spawned before any image needs them
    yield pool
    pool.close()


def noise(size: int = 96) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_a_child_process_makes_the_same_file_as_this_one(renderer: Renderer) -> None:
    for spec in (SPEC, dataclasses.replace(SPEC, output_format="jpeg", logo=True, delivered=(80, 48))):
        made = renderer(noise(), spec, LABEL)
        assert made == render(noise(), spec, LABEL)
        assert Image.open(io.BytesIO(made)).size == spec.delivered_size


def test_a_child_that_dies_fails_one_image_and_the_next_gets_a_fresh_pool(renderer: Renderer) -> None:
    renderer(noise(), SPEC, LABEL)
    for pid in list(renderer._current()._processes):  # the OOM killer takes the encoders
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        renderer(noise(), SPEC, LABEL)
    assert Image.open(io.BytesIO(renderer(noise(), SPEC, LABEL))).size == (64, 64)
