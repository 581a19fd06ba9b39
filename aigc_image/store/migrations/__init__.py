"""Numbered SQL migrations, one folder per database: ``NNNN_name.sql``, applied in order, once."""

from __future__ import annotations

from importlib import resources


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The migration scripts of ``dialect`` (``sqlite`` or ``postgresql``) as (number, SQL), in order."""
    folder = resources.files("aigc_image.store.migrations") / dialect
    found = [(int(f.name.split("_", 1)[0]), f.read_text("utf-8")) for f in folder.iterdir() if f.name.endswith(".sql")]
    return sorted(found)
