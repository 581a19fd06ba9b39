"""Classifier hooks the content-review tests load by name (moderation.classifier)."""

from __future__ import annotations

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
