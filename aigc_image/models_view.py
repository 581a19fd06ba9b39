"""`aigc-image models` as text: every model of the catalogue, best first, in a few short lines each.

A table of a dozen columns wrapped every row into three lines at 80 columns, and cut words when
piped; so each model gets a head line (name, whether it fits this host, what it needs, its weights)
and indented detail lines (pipeline, size, steps, quantization, references, samplers, adapters,
accelerations), each wrapped at the width with an indent, never cut. No colours or box drawing:
the same text on a terminal and in a file.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from aigc_image import weights
from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.hardware import Hardware, fits, needed_gb, quantization_problem

INDENT = "    "


def render(catalog: Catalog, hardware: Hardware, default_label: str, default_note: str, width: int = 80) -> str:
    """The listing, ``default_label`` marked; ``default_note`` says which model is the default and why."""
    lines = [f"Models on this host ({hardware.describe()}), best first; * marks the default.", ""]
    for entry in catalog.entries.values():
        lines += _model(entry, hardware, entry.label == default_label, width)
    lines.append("")
    lines += _wrapped([f"* default model: {default_note}"], width, "", "  ")
    return "\n".join(lines) + "\n"


def _model(entry: ModelEntry, hardware: Hardware, default: bool, width: int) -> list[str]:
    mark = "* " if default else "  "
    head = f"{mark}{entry.label}  {_fits(entry, hardware)} · {_stored(entry)}"
    steps = f"{entry.steps} step{'s' if entry.steps != 1 else ''}"
    summary = [_pipeline(entry), f"{entry.width}×{entry.height}, {steps}", *_quantized(entry), _references(entry)]
    details = [
        " · ".join(summary),
        f"samplers: {', '.join(entry.samplers) if entry.samplers else 'its own scheduler only'}",
    ]
    if entry.adapters:
        details.append(f"adapters: {', '.join(_adapter(name, entry) for name in entry.adapters)}")
    if entry.accelerations:
        details.append(f"accelerations: {', '.join(entry.accelerations)}")
    return _wrapped([head], width, "", "      ") + _wrapped(details, width, INDENT, INDENT + "  ")


def _wrapped(lines: Iterable[str], width: int, indent: str, continuation: str) -> list[str]:
    out = []
    for line in lines:
        out += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=continuation,
                             break_long_words=False, break_on_hyphens=False)  # fmt: skip
    return out


def _fits(entry: ModelEntry, hardware: Hardware) -> str:
    """Whether it fits this host, with what it needs there."""
    where = "GPU" if hardware.kind == "cuda" else "RAM"
    need = needed_gb(entry, hardware)
    if quantization_problem(entry.quantization, hardware.kind, hardware.capability):  # the reason: at load, docs
        return f"cannot run {entry.quantization} here"
    if not need:
        return "GPU only" if hardware.kind != "cuda" else "needs an unknown amount of GPU memory"
    if fits(entry, hardware):
        return f"fits, needs {need:g} GB {where}"
    if hardware.kind == "cuda":
        return f"offloaded, needs {need:g} GB {where}"
    return f"does not fit, needs {need:g} GB {where}"


def _stored(entry: ModelEntry) -> str:
    state = weights.status(entry)
    if state.where == "built in":
        return "built in"
    if state.present:
        return f"{'cached' if state.where != 'local folder' else 'in its folder'}, {_size(state.size_bytes)}"
    return f"not cached ({entry.download_gb:g} GB)" if entry.download_gb else "not cached"


def _pipeline(entry: ModelEntry) -> str:
    if entry.engine != "diffusers":
        return "built in code"
    name = entry.pipeline.removesuffix("Pipeline")
    return f"{name} from one file" if entry.single_file else name


def _quantized(entry: ModelEntry) -> list[str]:
    return [] if entry.quantization == "none" else [entry.quantization]


def _references(entry: ModelEntry) -> str:
    if not entry.max_reference_images:
        return "no references"
    if entry.reference_strength:
        return "1 reference (image-to-image)"
    return f"up to {entry.max_reference_images} references (editing)"


def _adapter(name: str, entry: ModelEntry) -> str:
    return f"{name} (on, {entry.loras[name]:g})" if name in entry.loras else name


def _size(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
