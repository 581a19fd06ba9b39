"""Quantization: memory, speed and pixels of each method against the unquantized model, per family.

Each family's pipeline is saved as a diffusers folder once and loaded through the engine's own
path (``DiffusersEngine``: ``from_pretrained`` with the entry's quantization, or a GGUF denoiser
file written here with the ``gguf`` package), as a catalogue entry would load it. For every
method, in one process, against the unquantized model loaded the same way:

* weights: bytes of the denoiser and text encoders as stored (quantized tensors count their parts),
  and the ratio to unquantized;
* peak: on a GPU, ``max_memory_allocated`` during a one-image call at the native size (all of the
  model's memory, activations included); on a CPU, the weights' ratio is the figure;
* speed: seconds per image (best of 2 after a warm-up) and the ratio to unquantized;
* pixels: the same prompt and seed against unquantized: max and mean difference, PSNR.

Default: the CPU, with the tiny copies of the real classes (tests/tiny_models.py) at 256 px, for
the methods a CPU runs (int8, GGUF Q8_0 and Q4_0). ``--full`` on a GPU: the full-size random-weight
pipelines from the real configs (bench/full_size.py), bf16, with float8, NF4 and GGUF Q4_K too. Random
weights: the pixel figures bound how far quantization moves an image, not how it looks.

    .venv/bin/python -m bench.quantization                       # CPU, tiny copies
    python -m bench.quantization --full --out DIR [--only z-image-turbo] [--budget 540]   # a GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from aigc_image.catalog import ModelEntry, ModelLabel, load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.loading import modules, weight_bytes
from bench import full_size
from tests import tiny_models
from tests.gguf_files import write_gguf


@dataclass(frozen=True)
class Family:
    key: str  # bench/full_size.py's name
    label: str  # the built-in entry whose class, steps and guidance it runs
    tiny: str  # tests/tiny_models.py's class
    gguf: bool  # its denoiser's single-file layout is the diffusers one, so the saved weights make a GGUF file


FAMILIES = [
    Family("qwen-image-2.1", "Qwen:2.1", "QwenImage21Pipeline", gguf=True),
    Family("z-image-turbo", "Z-Image:turbo", "ZImagePipeline", gguf=False),
    Family("flux2-klein-4b", "FLUX.2:klein-4b", "Flux2KleinPipeline", gguf=False),
]
QUANTIZED = ("transformer", "text_encoder")


def build(family: Family, full: bool, device: torch.device) -> Any:
    if full:
        return full_size.build(family.key, device, torch.bfloat16)
    return tiny_models.BUILDERS[family.tiny]()


def variants(family: Family, device: torch.device) -> list[str]:
    found = ["int8"]
    if device.type == "cuda":
        found += ["float8", "nf4"]
    if family.gguf:  # the K types' 256-value blocks fit only full-size rows
        found += ["gguf-Q8_0", "gguf-Q4_K" if device.type == "cuda" else "gguf-Q4_0"]
    return found


def entry_for(family: Family, folder: Path, variant: str, size: int, steps: int, gguf_dir: Path) -> ModelEntry:
    builtin = load_catalog().lookup(ModelLabel.parse(family.label))
    changes: dict[str, Any] = {"source": str(folder), "width": size, "height": size, "steps": steps,
                               "version": f"bench-{variant}"}  # fmt: skip
    if variant.startswith("gguf-"):
        qtype = variant.removeprefix("gguf-")
        path = gguf_dir / f"{family.key}-{qtype}.gguf"
        if not path.exists():
            state = load_file(next((folder / "transformer").glob("*.safetensors")))
            write_gguf(state, path, qtype)
        changes |= {"quantization": "gguf", "denoiser_file": str(path)}
    elif variant != "none":
        changes["quantization"] = variant
    return builtin.changed(**changes)


def measure(engine: DiffusersEngine, entry: ModelEntry, size: int, device: torch.device) -> dict[str, Any]:
    pipe = engine.pipeline(entry)
    stored = sum(weight_bytes(module) for name, module in modules(pipe).items() if name in QUANTIZED)
    request = GenerationRequest("a lighthouse on a cliff at dusk", "", 1, size, size, entry.steps, None, seed=11)
    engine.generate(entry, [request], lambda done, total: None)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timings, image = [], None
    for _ in range(2):
        started = time.perf_counter()
        [[image]] = engine.generate(entry, [request], lambda done, total: None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {"weights_gib": stored / 2**30, "peak_gib": peak, "s_per_image": min(timings), "image": image}


def distance(first: Any, second: Any) -> dict[str, float]:
    a, b = (np.asarray(image.convert("RGB"), dtype=np.int16) for image in (first, second))
    difference = np.abs(a - b)
    mse = float((difference.astype(np.float64) ** 2).mean())
    return {"max": int(difference.max()), "mean": round(float(difference.mean()), 2),
            "psnr_db": round(10 * math.log10(255**2 / mse), 1) if mse else math.inf}  # fmt: skip


def run_family(family: Family, args: argparse.Namespace, device: torch.device, started: float) -> list[dict[str, Any]]:
    size, steps = (1024, 8) if args.full else (args.size, 4)
    root = Path(tempfile.mkdtemp(prefix=f"quant-{family.key}-"))
    rows: list[dict[str, Any]] = []
    try:
        pipe = build(family, args.full, device if args.full else torch.device("cpu"))
        tiny_models.save_pipeline(pipe, root / "model")
        del pipe
        gc.collect()
        engine = DiffusersEngine(str(device), allow_download=False, max_loaded=1)
        plain = measure(engine, entry_for(family, root / "model", "none", size, steps, root), size, device)
        rows.append({"family": family.key, "variant": "none", **_row(plain, plain)})
        for variant in variants(family, device):
            if args.budget and time.monotonic() - started > args.budget:
                rows.append({"family": family.key, "variant": variant, "skipped": "time budget"})
                continue
            try:
                result = measure(engine, entry_for(family, root / "model", variant, size, steps, root), size, device)
                rows.append({"family": family.key, "variant": variant, **_row(result, plain)})
            except Exception as exc:  # one method's failure is a finding, not the end of the run
                rows.append({"family": family.key, "variant": variant, "error": f"{type(exc).__name__}: {exc}"[:300]})
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _row(result: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    return {
        "weights_gib": round(result["weights_gib"], 4),
        "weights_ratio": round(result["weights_gib"] / plain["weights_gib"], 3),
        "peak_gib": round(result["peak_gib"], 2), "s_per_image": round(result["s_per_image"], 3),
        "speed_ratio": round(plain["s_per_image"] / result["s_per_image"], 2),
        "pixels": distance(plain["image"], result["image"]),
    }  # fmt: skip


def table(rows: list[dict[str, Any]], device: str) -> str:
    lines = [f"{device}", "", "| family | method | weights (denoiser + text encoder) | vs unquantized | peak GiB | "
             "s/image | speed vs unquantized | pixels vs unquantized (max, mean /255, PSNR) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        if "weights_gib" not in row:
            lines.append(f"| {row['family']} | {row['variant']} | {row.get('error', row.get('skipped'))} |||||||")
            continue
        pixels = row["pixels"]
        weights = f"{row['weights_gib'] * 1024:.2f} MiB" if row["weights_gib"] < 1 else f"{row['weights_gib']:.2f} GiB"
        lines.append(
            f"| {row['family']} | {row['variant']} | {weights} | {row['weights_ratio']:.2f}× | "
            f"{row['peak_gib'] or '-'} | {row['s_per_image']} | {row['speed_ratio']}× | "
            f"{pixels['max']}, {pixels['mean']}, {pixels['psnr_db']} dB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full-size pipelines on the GPU (needs one)")
    parser.add_argument("--size", type=int, default=256, help="side in pixels with the tiny copies")
    parser.add_argument("--only", default="", help="comma-separated families: qwen-image-2.1, z-image-turbo, ...")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds; later methods are skipped past it")
    parser.add_argument("--out", type=Path, default=None, help="also write quantization.json and .md here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cuda" if args.full else "cpu")
    if args.full and not torch.cuda.is_available():
        parser.error("--full needs a CUDA GPU")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'}, " \
        f"{torch.get_num_threads()} threads), tiny copies at {args.size} px"  # fmt: skip
    started, rows = time.monotonic(), []
    wanted = set(filter(None, args.only.split(",")))
    for family in FAMILIES:
        if not wanted or family.key in wanted:
            rows += run_family(family, args, device, started)
    report = table(rows, name)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        plain_rows = [{k: v for k, v in row.items() if k != "image"} for row in rows]
        (args.out / "quantization.json").write_text(json.dumps({"device": name, "rows": plain_rows}, indent=2))
        (args.out / "quantization.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
