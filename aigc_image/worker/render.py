"""Turning a generated image into the bytes a task stores: its delivered size, its visible label
if the request asked for one, its file format and its implicit AIGC label.

Pillow holds the GIL while it compresses a PNG into memory: 100–300 ms for a 1024 px image. In the
worker's process that would stall the thread that launches the GPU's work while the previous
batch is delivered (on an H200, SD-Turbo at batch 1 went from 0.70 to 0.82 of the raw loop
without it). So a GPU worker encodes in child processes, ``Renderer``; a CPU worker, whose cores
are the pipeline's own anyway, calls ``render`` in its delivery threads.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from PIL import Image

from aigc_image.media.encode import encode
from aigc_image.media.labels import add_visible_label
from aigc_image.tasks import TaskSpec


def deliverable(image: Image.Image, spec: TaskSpec) -> Image.Image:
    """The generated image as the request asked for it: exactly its size, labelled if asked."""
    if image.size != spec.delivered_size:
        image = image.resize(spec.delivered_size, Image.Resampling.LANCZOS)
    return add_visible_label(image) if spec.logo else image


def render(image: Image.Image, spec: TaskSpec, label: dict[str, str]) -> bytes:
    """The stored file of one image (``label``: media/labels.implicit_label)."""
    return encode(deliverable(image, spec), spec.output_format, label)


def _started() -> None:
    """A child's first task: nothing, once it has imported this module (and Pillow)."""


class Renderer:
    """``render`` in a pool of child processes (``start`` spawns them all, so that no task waits
    for a child to import Pillow). A child that dies (the OOM killer) fails the image in hand with
    BrokenProcessPool; the next image gets a fresh pool."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image, spec: TaskSpec, label: dict[str, str]) -> bytes:
        pool = self._current()
        try:
            return pool.submit(render, image, spec, label).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise

    def start(self) -> None:
        pool = self._current()
        # Submitted together: each submit finds no idle child (none has even started), so spawns one.
        wait([pool.submit(_started) for _ in range(self._processes)])

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the worker's process has CUDA initialised, which a fork cannot inherit
                self._pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
