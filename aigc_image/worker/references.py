"""References: each task's reference images (``ImageInfos``), fetched safely (fetch/), decoded
with a pixel cap and reviewed, before the batch generates.

Each task fetches its own: a reference that cannot be fetched, decoded or used fails (or retries)
only its task, and the batch goes on with the others.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from PIL import Image

from aigc_image.fetch.fetcher import Fetcher, FetchRefused
from aigc_image.fetch.images import decode_reference
from aigc_image.tasks import TaskSpec
from aigc_image.worker.leases import Job
from aigc_image.worker.outcomes import Outcomes
from aigc_image.worker.screening import ImageScreen


class References:
    def __init__(self, fetcher: Fetcher | None, screen: ImageScreen, outcomes: Outcomes, max_pixels: int) -> None:
        self._fetcher = fetcher  # None: this worker fetches no URLs (uploaded images still work)
        self._screen = screen
        self._outcomes = outcomes
        self._max_pixels = max_pixels  # fetch.max_pixels

    def prepare(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs whose references are ready (``Job.references``); the others are settled."""
        ready = []
        for job in jobs:
            try:
                job.references = self.images(job.task.spec)
            except Exception as exc:  # every one, named or not, ends this attempt of this task only
                self._outcomes.failed([job], exc)
                continue
            ready.append(job)
        return ready

    def images(self, spec: TaskSpec) -> tuple[Image.Image, ...]:
        """The task's reference images, fetched, decoded and reviewed."""
        images = []
        for index, url in enumerate(spec.reference_urls):
            try:
                if url.startswith("data:"):
                    data = uploaded(url)
                elif self._fetcher is None:
                    raise FetchRefused("this worker does not fetch reference images")
                else:
                    data = self._fetcher.fetch(url)
                image = decode_reference(data, self._max_pixels)
            except FetchRefused as exc:
                raise FetchRefused(f"ImageInfos.{index}: {exc}") from None
            self._screen.check(f"reference image {index}", "reference_image", image)
            images.append(image)
        return tuple(images)


def uploaded(url: str) -> bytes:
    """The bytes of a reference image sent with its request, as a base64 data: URL."""
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except ValueError:
        raise FetchRefused("the uploaded image is not valid base64") from None
