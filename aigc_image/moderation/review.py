"""Content review of prompts (and, through an operator's classifier, of images).

A ``ContentReview`` matches text against term lists (the shipped default list and the
operator's files): every reading of the text (normalize.readings: as written, and with the
usual disguises decoded), folded to a canonical form, is searched for the terms on word
boundaries (matcher.py). Then it asks the operator's classifier hook, if one is configured. It
fails closed: anything that keeps the review from running refuses the request.

The classifier hook is ``module:callable``. It is called as ``callable(kind, content)`` with
``kind`` one of ``"Prompt"``, ``"NegativePrompt"`` (content: the text) or ``"output_image"``
(content: a PIL image), and returns None to allow or a short reason to refuse.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aigc_image.config import ConfigError
from aigc_image.errors import Reason, ServiceError
from aigc_image.moderation.matcher import TermMatcher
from aigc_image.moderation.normalize import canonical, readings

log = logging.getLogger(__name__)

DEFAULT_LIST = "default"
SHORTEST_BACKWARDS = 4  # letters a Latin term needs to be looked for in text read backwards
Classifier = Callable[[str, Any], "str | None"]


class ReviewUnavailable(ServiceError):
    """The review could not run; the content must be treated as refused."""

    reason = Reason.REVIEW_UNAVAILABLE


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    source: str = ""  # the list or classifier that refused, for the audit log

    @classmethod
    def allow(cls) -> Verdict:
        return cls(True)


@dataclass(frozen=True)
class TermList:
    name: str
    terms: tuple[str, ...]


def read_term_file(path: Path) -> TermList:
    """One term per line; blank lines and ``#`` comments are skipped. The file's stem names it."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read term list {path}: {exc}") from exc
    return TermList(path.stem, tuple(line.strip() for line in lines if line.strip() and not line.startswith("#")))


def default_term_list() -> TermList:
    text = resources.files("aigc_image.moderation").joinpath("default_terms.txt").read_text("utf-8")
    return TermList(DEFAULT_LIST, tuple(line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"))


def load_classifier(spec: str) -> Classifier:
    module_name, _, attribute = spec.partition(":")
    try:
        classifier = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load the content classifier {spec!r}: {exc}") from exc
    if not callable(classifier):
        raise ConfigError(f"the content classifier {spec!r} is not callable")
    return classifier  # type: ignore[no-any-return]


class ContentReview:
    def __init__(self, lists: Sequence[TermList], classifier: Classifier | None = None) -> None:
        self._matcher = TermMatcher((term, term_list.name) for term_list in lists for term in term_list.terms)
        self._classifier = classifier
        self.term_count = sum(len(term_list.terms) for term_list in lists)

    def check_text(self, kind: str, text: str) -> Verdict:
        """Review one text field; raises ReviewUnavailable if the review cannot run."""
        try:
            for reading in readings(text):
                shortest = SHORTEST_BACKWARDS if reading.backwards else 1
                for label in self._matcher.labels(canonical(reading.text), shortest):
                    return Verdict(False, f"list:{label}")
        except Exception as exc:
            raise ReviewUnavailable(f"term matching failed: {type(exc).__name__}") from exc
        return self._classify(kind, text)

    def check_image(self, kind: str, image: Any) -> Verdict:
        return self._classify(kind, image)

    def _classify(self, kind: str, content: Any) -> Verdict:
        if self._classifier is None:
            return Verdict.allow()
        try:
            reason = self._classifier(kind, content)
        except Exception as exc:
            raise ReviewUnavailable(f"the classifier failed: {type(exc).__name__}: {exc}") from exc
        if reason is None:
            return Verdict.allow()
        return Verdict(False, f"classifier:{reason}")


def build_review(term_files: Sequence[str], use_default_list: bool, classifier: str) -> ContentReview:
    """The review the settings describe; unreadable lists or hooks stop start-up (fail closed)."""
    lists = [default_term_list()] if use_default_list else []
    lists += [read_term_file(Path(path)) for path in term_files]
    review = ContentReview(lists, load_classifier(classifier) if classifier else None)
    log.info("content review: %d terms from %d list(s)%s", review.term_count, len(lists),
             ", with a classifier" if classifier else "")  # fmt: skip
    return review
