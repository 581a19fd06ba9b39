"""Content review of the images a task uses (its references) and makes (its outputs).

Review fails closed: an image the review could not check is refused like one it refused
(UnreviewedContent), so an outage of a classifier never lets content through.
"""

from __future__ import annotations

import logging

from PIL import Image

from aigc_image.errors import ContentRefused, UnreviewedContent
from aigc_image.moderation.review import ContentReview, ReviewUnavailable

log = logging.getLogger(__name__)


class ImageScreen:
    def __init__(self, review: ContentReview | None) -> None:
        self._review = review  # None: no review configured, every image passes

    def check(self, what: str, kind: str, image: Image.Image) -> None:
        """Raise ContentRefused unless ``image`` passes review. ``what`` names it for the client
        ("generated image"); ``kind`` for the classifier ("output_image", "reference_image")."""
        if self._review is None:
            return
        try:
            verdict = self._review.check_image(kind, image)
        except ReviewUnavailable as exc:
            log.error("%s review unavailable: %s", kind, exc)
            raise UnreviewedContent(f"Content review of the {what} is unavailable, so it was not used.") from None
        if not verdict.allowed:
            log.warning("%s refused by %s", kind, verdict.source)
            raise ContentRefused(f"The {what} was refused by content review.")
