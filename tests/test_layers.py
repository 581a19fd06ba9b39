"""The layers stay as drawn (DESIGN.md): each rule names a package that must not import another.

    protocol (HTTP, wire errors) ─▶ store, results, catalog, moderation, fetch, media
    worker ─▶ engines, store, results, catalog, fetch, media, moderation
    engines ─▶ catalog            store ─▶ tasks            results ─▶ tasks

Every module may use config, errors, tasks and catalog. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "aigc_image"
RULES = [
    ("protocol", "engines"),
    ("protocol", "worker"),
    ("engines", "store"),
    ("engines", "protocol"),
    ("engines", "worker"),
    ("store", "protocol"),
    ("store", "engines"),
    ("store", "worker"),
    ("results", "store"),
    ("results", "worker"),
    ("worker", "protocol"),  # wire-protocol errors stay at the edge
    ("catalog", "protocol"),
    ("catalog", "engines"),
    ("errors", "protocol"),
]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "aigc_image":  # from aigc_image import x
            found |= {f"aigc_image.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("aigc_image.")}


def modules_of(layer: str) -> list[Path]:
    folder = PACKAGE / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=lambda v: str(v))
def test_a_layer_never_imports_what_it_must_not(layer: str, forbidden: str) -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(i for i in imports_of(path) if i.split(".")[1] == forbidden)
        for path in modules_of(layer)
    }
    assert not {k: v for k, v in offending.items() if v}


def test_the_rules_see_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from aigc_image.engines.base import Engine\n")
    assert imports_of(module) == {"aigc_image.engines.base"}
