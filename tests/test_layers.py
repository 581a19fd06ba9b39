"""The layers stay as drawn (DESIGN.md), and the rules follow imports transitively: a module breaks
a rule when anything it imports, or anything those import, does. Imports inside functions count.

    protocol (HTTP, wire errors) ─▶ store, results, catalog, moderation, fetch, media
    worker ─▶ engines, store, results, catalog, fetch, media, moderation
    engines ─▶ catalog            store ─▶ tasks            results ─▶ nothing of tasks
    wiring (the composition root) ─▶ everything; only the entry points (serve.py, cli.py,
    worker/process.py) import it

Every module may use config, errors, tasks and catalog, which use nothing but each other. Worker
processes never load protocol/ or Starlette, not even through wiring: the last test starts one's
imports in a fresh interpreter to see.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "aigc_image"
ENTRY_POINTS = ("aigc_image.serve", "aigc_image.cli", "aigc_image.__main__", "aigc_image.worker.process")
RULES = [  # (modules under this name, must never reach modules under this one)
    ("aigc_image.protocol", "aigc_image.engines"),
    ("aigc_image.protocol", "aigc_image.worker"),
    ("aigc_image.engines", "aigc_image.store"),
    ("aigc_image.engines", "aigc_image.protocol"),
    ("aigc_image.engines", "aigc_image.worker"),
    ("aigc_image.store", "aigc_image.protocol"),
    ("aigc_image.store", "aigc_image.engines"),
    ("aigc_image.store", "aigc_image.worker"),
    ("aigc_image.results", "aigc_image.store"),
    ("aigc_image.results", "aigc_image.worker"),
    ("aigc_image.results", "aigc_image.tasks"),  # results know nothing of tasks
    ("aigc_image.worker", "aigc_image.protocol"),  # worker processes never load the HTTP layer...
    ("aigc_image.wiring.worker", "aigc_image.protocol"),  # ...not even through wiring
    ("aigc_image.catalog", "aigc_image.protocol"),
    ("aigc_image.catalog", "aigc_image.engines"),
    ("aigc_image.catalog", "aigc_image.worker"),
    ("aigc_image.catalog", "aigc_image.store"),
    ("aigc_image.catalog", "aigc_image.results"),
    ("aigc_image.errors", "aigc_image.protocol"),
]
RULES += [(layer, "aigc_image.wiring") for layer in ("protocol", "engines", "store", "results", "catalog", "worker")]
FOUNDATIONS = {  # module: all it may reach
    "aigc_image.errors": set(),
    "aigc_image.clock": set(),
    "aigc_image.tasks": {"aigc_image.errors"},
    "aigc_image.bounded": {"aigc_image.errors"},  # the parse limits every face and the settings files share
    "aigc_image.config": {"aigc_image.errors", "aigc_image.bounded"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The aigc_image modules ``path`` imports (``from package import module`` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # kept below if a module
    return {name for name in found if name.split(".")[0] == "aigc_image"}


@functools.cache
def direct(module: str) -> frozenset[str]:
    """What importing ``module`` runs at once: its imports that are modules, and their packages."""
    reached = set()
    for name in imports_of(modules()[module]):
        parts = name.split(".")
        reached |= {".".join(parts[:end]) for end in range(2, len(parts) + 1)}  # aigc_image.a, aigc_image.a.b
    return frozenset(name for name in reached if name in modules() and name != module)


@functools.cache
def reach(module: str) -> frozenset[str]:
    """Every module importing ``module`` may load, in any function."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in direct(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return frozenset(seen - {module})


def under(module: str, prefix: str) -> bool:
    prefix = prefix if prefix.startswith("aigc_image") else f"aigc_image.{prefix}"
    return module == prefix or module.startswith(prefix + ".")


def broken(layer: str, forbidden: str) -> dict[str, list[str]]:
    """The modules of ``layer`` that reach ``forbidden``, with what they reach of it (the entry
    points are the ones that may import the composition root)."""
    exempt = ENTRY_POINTS if forbidden == "aigc_image.wiring" else ()
    found = {}
    for module in modules():
        if under(module, layer) and module not in exempt:
            bad = sorted(name for name in reach(module) if under(name, forbidden))
            if bad:
                found[module] = bad
    return found


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=lambda value: str(value).removeprefix("aigc_image."))
def test_a_layer_never_reaches_what_it_must_not(layer: str, forbidden: str) -> None:
    assert not broken(layer, forbidden)


@pytest.mark.parametrize("forbidden", ["enhance", "hardware"])
def test_the_catalogue_depends_on_neither_prompt_enhancing_nor_hardware(forbidden: str) -> None:
    assert not broken("catalog", forbidden)


@pytest.mark.parametrize("module", FOUNDATIONS)
def test_the_foundations_use_nothing_but_each_other(module: str) -> None:
    assert reach(module) <= FOUNDATIONS[module]


def test_the_rules_see_imports_inside_functions_and_through_other_modules(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from aigc_image.engines.base import Engine\n")
    assert imports_of(module) >= {"aigc_image.engines.base"}
    assert "aigc_image.catalog" in reach("aigc_image.engines.base")  # engines.base imports the catalogue
    assert "aigc_image.wiring" in reach("aigc_image.wiring.worker")  # a package's __init__ runs first
    assert "aigc_image.errors" in reach("aigc_image.worker.process")  # process → ... → errors


def test_a_worker_process_loads_neither_the_http_layer_nor_torch_before_it_is_pinned() -> None:
    """``aigc-image worker`` imports the CLI, then the worker process's module; a fresh interpreter
    shows what that loads. torch comes later, after hardware.pin chose the GPU it may see."""
    script = "import sys, aigc_image.cli, aigc_image.worker.process\nprint('\\n'.join(sorted(sys.modules)))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True, timeout=120
    ).stdout.split()
    assert "aigc_image.worker.process" in loaded
    unwanted = [m for m in loaded if m.split(".")[0] in ("starlette", "uvicorn", "torch", "diffusers")]
    unwanted += [m for m in loaded if under(m, "protocol")]
    assert unwanted == []
