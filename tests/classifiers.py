"""Classifier hooks the content-review tests load by name (moderation.classifier)."""

from __future__ import annotations

import os
from typing import Any


def policy(kind: str, content: Any) -> str | None:
    """Refuses swords; breaks down, like an unreachable classifier service, on a trigger word."""
    if isinstance(content, str) and "classifier-down" in content.lower():
        raise ConnectionError("classifier service unreachable")
    if isinstance(content, str) and "sword" in content.lower():
        return "weapons"
    return None


def refuse_images(kind: str, content: Any) -> str | None:
    return "image refused" if kind == "output_image" else None


def crash_on_48px_images(kind: str, content: Any) -> str | None:
    """A "poison" task for the worker tests: its 48 px images crash the worker process outright,
    as an out-of-memory kill would."""
    if kind == "output_image" and content.size == (48, 48):
        os._exit(137)
    return None


def refuse_33px_references(kind: str, content: Any) -> str | None:
    """Refuses reference images of 33×33 pixels (the test's "forbidden" picture)."""
    return "forbidden reference" if kind == "reference_image" and content.size == (33, 33) else None


def refuse_33px_references_and_80px_outputs(kind: str, content: Any) -> str | None:
    """For the /v1 tests: a task that fails because of its request, at either end."""
    if kind == "output_image" and content.size == (80, 80):
        return "forbidden output"
    return refuse_33px_references(kind, content)
