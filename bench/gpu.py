"""GPU figures: the service against a raw diffusers loop on full-size pipelines, the share of the
GPU's peak, peak memory, batching's pixel tolerance, and what compile and each cache method do.

Everything is built here, with no download: full-size random-weight pipelines from the real
configs (bench/full_size.py, parameter counts checked), saved as diffusers folders so the service
loads them through its own ``from_pretrained`` path. For each case, in one process on one GPU:

* FLOPs per image, counted (``FlopCounterMode``) on a 1-step and a 2-step call: fixed + steps ×
  per-step. Matmuls, convolutions and attention; element-wise work is not counted.
* Raw: a warm-up call, then sequential ``pipe()`` calls of ``batch`` prompts, each image with its
  own seeded generator (as the service does); img/s and peak memory (``max_memory_allocated``).
* Service: a real ``aigc-image serve`` (API + one worker) with ``worker.max_batch = batch`` and the
  model preloaded; a warm-up batch, then ``batch × k`` tasks created at once by as many clients.
  img/s = tasks / (last completion − first create), read from the task store's own timestamps.
* Share of peak: counted FLOPs × img/s over the bf16 dense peak (the datasheet's, and the one a
  large bf16 matmul reaches here, measured first).
* Batching: each image made in a batch against the same seed alone (raw, same process).
* Accelerations, through the service's own ``accelerate()``: compile (regional) and channels_last on
  SDXL; first-block cache, TaylorSeer, MagCache (ratios calibrated on this model first) and compile on
  Qwen-Image's 20B transformer. Speed-up and pixel difference against the plain run, same seed.

With ``--small`` it runs on the CPU with the tiny copies of the same classes (tests/tiny_models.py)
at 64–128 px, so the script is known to work before a GPU is lent. Results go to OUT/gpu.json and
OUT/gpu.md; the table is printed last. Sections that would overrun ``--budget`` are skipped, and say so.

    python -m bench.gpu --out DIR [--small] [--budget SECONDS] [--only sdxl,sd-turbo,...]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import gc
import io
import json
import math
import os
import platform
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from aigc_image.catalog import ModelEntry, ModelLabel, load_catalog
from aigc_image.engines.accelerate import accelerate
from aigc_image.engines.loading import pick_dtype
from bench import full_size
from bench.common import server
from bench.r1_overhead import KeepAliveClient
from tests import tiny_models

DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass
class Case:
    key: str  # full_size.BUILDERS name
    catalog: str  # the built-in entry whose class, dtype and guidance it runs
    width: int
    height: int
    steps: int
    guidance: float
    batches: dict[int, int]  # batch size → images timed
    tiny: str  # tests/tiny_models.BUILDERS name for --small
    service: bool = True


GPU_CASES = [
    Case("sdxl", "SDXL-Turbo:1.0", 1024, 1024, 30, 5.0, {1: 5, 4: 8}, "StableDiffusionXLPipeline"),
    Case("sd-turbo", "SD-Turbo:1.0", 512, 512, 1, 0.0, {1: 32, 4: 64, 16: 128}, "StableDiffusionPipeline"),
    Case("hunyuan-dit", "Hunyuan:dit-v1.2", 1024, 1024, 50, 5.0, {1: 2}, "HunyuanDiTPipeline"),
    # The families added in issue 16, at their model cards' settings (guidance 1: none).
    Case("z-image-turbo", "Z-Image:turbo", 1024, 1024, 9, 0.0, {1: 4, 4: 8}, "ZImagePipeline"),
    Case("flux2-klein-4b", "FLUX.2:klein-4b", 1024, 1024, 4, 1.0, {1: 4, 4: 8}, "Flux2KleinPipeline"),
    Case("qwen-image-2.1", "Qwen:2.1", 1024, 1024, 40, 1.0, {1: 2}, "QwenImage21Pipeline"),
]
SMALL_CASES = [
    Case("sdxl", "SDXL-Turbo:1.0", 64, 64, 4, 5.0, {1: 2, 2: 4}, "StableDiffusionXLPipeline"),
    Case("sd-turbo", "SD-Turbo:1.0", 64, 64, 1, 0.0, {1: 4, 4: 8}, "StableDiffusionPipeline"),
    Case("hunyuan-dit", "Hunyuan:dit-v1.2", 128, 128, 4, 5.0, {1: 2}, "HunyuanDiTPipeline"),
    Case("z-image-turbo", "Z-Image:turbo", 128, 128, 4, 0.0, {1: 2, 2: 4}, "ZImagePipeline"),
    Case("flux2-klein-4b", "FLUX.2:klein-4b", 128, 128, 2, 1.0, {1: 2, 2: 4}, "Flux2KleinPipeline"),
    Case("qwen-image-2.1", "Qwen:2.1", 128, 128, 4, 1.0, {1: 2}, "QwenImage21Pipeline"),
]


@dataclass
class Bench:
    out: Path
    device: torch.device
    small: bool
    budget: float
    accelerations: bool = True
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Any] = field(default_factory=dict)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=2))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# -- measuring ---------------------------------------------------------------------------------------


def peak_matmul_tflops(device: torch.device) -> float:
    """What a large bf16 matrix product reaches on this GPU: the practical ceiling."""
    n = 8192 if device.type == "cuda" else 512
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def call_kwargs(pipe: Any, case: Case, first_seed: int, batch: int) -> dict[str, Any]:
    """A plain diffusers call for ``batch`` images, each with its own seeded generator."""
    generator_device = "cpu"
    kwargs: dict[str, Any] = {
        "prompt": [f"a lighthouse on a cliff at dusk, picture {first_seed + i}" for i in range(batch)],
        "num_inference_steps": case.steps, "width": case.width, "height": case.height,
        "generator": [torch.Generator(generator_device).manual_seed(first_seed + i) for i in range(batch)],
    }  # fmt: skip
    if type(pipe).__name__ in ("QwenImagePipeline", "QwenImage21Pipeline"):
        kwargs["true_cfg_scale"] = case.guidance
    else:
        kwargs["guidance_scale"] = case.guidance
    if type(pipe).__name__ == "QwenImage21Pipeline":  # one prompt a call, as the engine calls it (families.py)
        kwargs["prompt"] = kwargs["prompt"][0]
        kwargs["num_images_per_prompt"] = batch
    if type(pipe).__name__ == "HunyuanDiTPipeline":
        kwargs["use_resolution_binning"] = False  # as the engine calls it: the size asked for, exactly
    return kwargs


def generate(pipe: Any, case: Case, first_seed: int, batch: int, steps: int | None = None) -> list[Any]:
    kwargs = call_kwargs(pipe, case, first_seed, batch)
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    with torch.inference_mode():
        return list(pipe(**kwargs).images)


def flops_per_image(pipe: Any, case: Case) -> float:
    """Counted on a 1-step and a 2-step call: fixed (text, VAE) + steps × per step."""
    counted = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            generate(pipe, case, 0, 1, steps=steps)
        counted.append(counter.get_total_flops())
    per_step, fixed = counted[1] - counted[0], 2 * counted[0] - counted[1]
    return float(fixed + case.steps * per_step)


def raw_rate(bench: Bench, pipe: Any, case: Case, batch: int, images: int) -> tuple[float, float, list[Any]]:
    """img/s of sequential raw calls, peak GiB, and the images (seeds 0..images-1)."""
    generate(pipe, case, 10_000, batch)  # warm-up
    bench.sync()
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    made: list[Any] = []
    started = time.perf_counter()
    for first in range(0, images, batch):
        made += generate(pipe, case, first, batch)
    bench.sync()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if bench.device.type == "cuda" else 0.0
    return images / seconds, peak, made


def pixel_difference(first: Any, second: Any) -> dict[str, float]:
    a, b = (np.asarray(image.convert("RGB"), dtype=np.int16) for image in (first, second))
    diff = np.abs(a - b)
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {
        "max": int(diff.max()),
        "mean": round(float(diff.mean()), 3),
        "share_differing": round(float((diff > 0).mean()), 5),
        "psnr_db": round(10 * math.log10(255**2 / mse), 1) if mse else math.inf,
    }


def worst(differences: list[dict[str, float]]) -> dict[str, float]:
    return {key: max(d[key] for d in differences) for key in ("max", "mean", "share_differing")}


# -- the service -------------------------------------------------------------------------------------


def registry(case: Case, entry: ModelEntry, folder: Path) -> str:
    guidance = f"guidance_scale = {case.guidance}\n" if entry.guidance else "guidance = false\n"
    return (
        f'[[models]]\nname = "bench"\nversion = "{case.key}"\nengine = "diffusers"\nsource = "{folder}"\n'
        f'pipeline = "{entry.pipeline}"\ndtype = "{entry.dtype}"\nsteps = {case.steps}\nmax_steps = {case.steps}\n'
        f"{guidance}width = {case.width}\nheight = {case.height}\nmax_batch = 16\n"
        f"negative_prompt = {str(entry.negative_prompt).lower()}\nsize_multiple = {entry.size_multiple}\n"
    )


def wait_until_loaded(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            view = json.loads(urllib.request.urlopen(f"{url}/readyz", timeout=10).read())
            if any(worker["loaded"] for worker in view.get("workers", [])):
                return
            if any(worker["failed"] for worker in view.get("workers", [])):
                raise RuntimeError(f"the worker could not load the model: {view}")
        time.sleep(0.5)
    raise TimeoutError("the worker did not load the model")


def run_tasks(url: str, case: Case, count: int, first_seed: int) -> list[str]:
    """``count`` clients create a task each at the same moment and poll until it is DONE."""
    barrier, ids, errors = threading.Barrier(count), [""] * count, []

    def client(index: int) -> None:
        try:
            connection = KeepAliveClient(url)
            barrier.wait()
            seed = first_seed + index
            params = {"Prompt": f"a lighthouse on a cliff at dusk, picture {seed}", "ModelName": "bench",
                      "ModelVersion": case.key, "AdditionalParameters": json.dumps({"seed": seed})}  # fmt: skip
            ids[index] = str(connection.call("CreateAigcImageTask", params)["TaskId"])
            while (status := connection.call("DescribeAigcImageTask", {"TaskId": ids[index]})["Status"]) not in (
                "DONE", "FAIL"
            ):  # fmt: skip
                time.sleep(0.2)  # the rate comes from the store's timestamps, not from these polls
            if status != "DONE":
                errors.append(f"task {ids[index]} failed")
        except Exception as exc:  # reported below, with the others
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return ids


def service_rate(case: Case, folder: Path, entry: ModelEntry, batch: int, images: int, data: Path) -> float:
    registry_file = data.parent / f"models-{case.key}.toml"
    registry_file.write_text(registry(case, entry, folder))
    env = {
        "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry_file),
        "AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false",
        "AIGC_IMAGE_WORKER_PRELOAD": f"bench:{case.key}",
        "AIGC_IMAGE_WORKER_MAX_BATCH": str(batch),
        # Clients' creates land within milliseconds; a batch never waits once full.
        "AIGC_IMAGE_WORKER_BATCH_WAIT_MS": "300" if batch > 1 else "0",
    }
    with server(data, env=env) as url:
        wait_until_loaded(url)
        run_tasks(url, case, batch, 10_000)  # warm-up batch
        ids = run_tasks(url, case, images, 0)
    with sqlite3.connect(data / "aigc-image.db") as db:
        marks = ",".join("?" * len(ids))
        first, last = db.execute(f"SELECT min(created_at), max(finished_at) FROM tasks WHERE task_id IN ({marks})",
                                 ids).fetchone()  # fmt: skip
    return images / (last - first)


# -- the sections ------------------------------------------------------------------------------------


def build_case(bench: Bench, case: Case, entry: ModelEntry) -> Any:
    dtype = pick_dtype(entry, bench.device)
    if bench.small:
        pipe = tiny_models.BUILDERS[case.tiny]().to(bench.device, dtype)
    else:
        pipe = full_size.build(case.key, bench.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(bench: Bench, case: Case, models: Path, peaks: dict[str, float]) -> dict[str, Any]:
    entry = load_catalog().lookup(ModelLabel.parse(case.catalog))
    started = time.monotonic()
    pipe = build_case(bench, case, entry)
    folder = models / case.key
    tiny_models.save_pipeline(pipe, folder)  # the Qwen-VL processor listed as the real repositories list it
    result: dict[str, Any] = {
        "case": f"{case.key} {case.width}px, {case.steps} step(s), guidance {case.guidance:g}",
        "dtype": str(pick_dtype(entry, bench.device)).removeprefix("torch."),
        "denoiser_params_m": round(full_size.millions(full_size.denoiser(pipe)), 1),
        "build_and_save_s": round(time.monotonic() - started, 1),
    }
    flops = flops_per_image(pipe, case)
    result["tflop_per_image"] = round(flops / 1e12, 2)
    runs, alone = [], None
    for batch, images in case.batches.items():
        raw, peak, made = raw_rate(bench, pipe, case, batch, images)
        run = {"batch": batch, "raw_img_s": round(raw, 3), "peak_gib": round(peak, 1)}
        if alone is None:
            alone = made
        else:  # the same seeds, batched: the pixels against alone
            run["batched_vs_alone"] = worst([pixel_difference(a, b) for a, b in zip(alone, made, strict=False)])
        for name, peak_tflops in peaks.items():
            run[f"share_of_{name}"] = round(flops * raw / 1e12 / peak_tflops, 3)
        runs.append(run)
        bench.results.setdefault("partial", {})[case.key] = result | {"runs": runs}
        bench.save()
    result["runs"] = runs
    if case.service:
        data = Path(tempfile.mkdtemp(prefix=f"service-{case.key}-"))
        for run in runs:
            rate = service_rate(case, folder, entry, run["batch"], case.batches[run["batch"]], data / str(run["batch"]))
            run["service_img_s"] = round(rate, 3)
            run["service_over_raw"] = round(rate / run["raw_img_s"], 3)
            for name, peak_tflops in peaks.items():
                run[f"service_share_of_{name}"] = round(flops * rate / 1e12 / peak_tflops, 3)
            bench.save()
        shutil.rmtree(data, ignore_errors=True)
    if case.key == "sdxl" and bench.accelerations:
        result["accelerations"] = accelerations(
            bench, pipe, case, entry, ["channels_last", "compile"], flops, peaks["measured"]
        )
    del pipe
    free(bench)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def accelerations(
    bench: Bench, pipe: Any, case: Case, entry: ModelEntry, variants: list[str], flops: float, peak: float
) -> list[dict[str, Any]]:
    """Each variant against the plain pipeline: seconds per image at batch 1, and its pixels."""
    one = dataclasses.replace(case, batches={1: 1})

    def timed() -> tuple[float, Any]:
        bench.sync()
        started = time.perf_counter()
        [image] = generate(pipe, one, 7, 1)
        bench.sync()
        return time.perf_counter() - started, image

    generate(pipe, one, 1, 1)  # warm
    plain_s, plain = min(timed(), timed(), key=lambda pair: pair[0])
    rows: list[dict[str, Any]] = [{"variant": "none", "s_per_image": round(plain_s, 3)}]
    rows[0]["share_of_measured"] = round(flops / plain_s / 1e12 / peak, 3)
    denoiser = full_size.denoiser(pipe)
    for variant in variants:
        if bench.left() < 60:
            rows.append({"variant": variant, "skipped": "time budget"})
            continue
        options: dict[str, Any] = {}
        if variant == "mag":  # calibrate its ratios on this model and step count first
            options = {"mag_ratios": calibrate_mag(pipe, entry, one)}
        elif variant == "first_block":
            options = {"threshold": 0.05}
        accelerated = entry.changed(
            steps=case.steps, compile=variant == "compile", channels_last=variant == "channels_last",
            cache=variant if variant in ("first_block", "taylorseer", "mag") else "none", cache_options=options,
        )  # fmt: skip
        row: dict[str, Any] = {"variant": variant}
        try:
            accelerate(pipe, accelerated)
            if variant == "compile":
                started = time.perf_counter()
                generate(pipe, one, 1, 1)
                bench.sync()
                row["compile_s"] = round(time.perf_counter() - started, 1)
            seconds, image = min(timed(), timed(), key=lambda pair: pair[0])
            row |= {"s_per_image": round(seconds, 3), "speedup": round(plain_s / seconds, 2)}
            row["share_of_measured"] = round(flops / seconds / 1e12 / peak, 3)  # counts skipped work as done
            row["pixels_vs_plain"] = pixel_difference(plain, image)
        except Exception as exc:  # one variant's failure is a finding, not the end of the run
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            if accelerated.cache != "none" and hasattr(denoiser, "disable_cache"):
                with contextlib.suppress(Exception):
                    denoiser.disable_cache()
            if variant == "channels_last":
                denoiser.to(memory_format=torch.contiguous_format)
        rows.append(row)
        bench.save()
    return rows


def calibrate_mag(pipe: Any, entry: ModelEntry, case: Case) -> list[float]:
    """MagCache's ratios for this model and step count, as its calibration mode prints them."""
    accelerate(pipe, entry.changed(steps=case.steps, cache="mag", cache_options={"calibrate": True}))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        generate(pipe, case, 1, 1)
    full_size.denoiser(pipe).disable_cache()
    line = [line for line in printed.getvalue().splitlines() if line.startswith("[")][-1]
    return [float(ratio) for ratio in ast.literal_eval(line)]


def qwen_accelerations(bench: Bench) -> dict[str, Any]:
    entry = load_catalog().resolve("Qwen", "0925")
    size, steps = (128, 8) if bench.small else (1024, 20)
    case = Case("qwen-image", "Qwen:0925", size, size, steps, 1.0, {1: 1}, "QwenImagePipeline", service=False)
    started = time.monotonic()
    if bench.small:
        pipe = tiny_models.qwen_image().to(bench.device, pick_dtype(entry, bench.device))
    else:
        pipe = full_size.build("qwen-image", bench.device, pick_dtype(entry, bench.device))
    pipe.set_progress_bar_config(disable=True)
    built = round(time.monotonic() - started, 1)
    flops = flops_per_image(pipe, case)
    result = {
        "case": f"qwen-image {size}px, {steps} steps, no CFG",
        "denoiser_params_m": round(full_size.millions(full_size.denoiser(pipe)), 1),
        "build_s": built,
        "tflop_per_image": round(flops / 1e12, 2),
    }
    variants = ["first_block", "taylorseer", "mag", "compile"]
    peak = bench.results["peak_tflops"]["measured"]
    result["accelerations"] = accelerations(bench, pipe, case, entry, variants, flops, peak)
    del pipe
    free(bench)
    return result


def free(bench: Bench) -> None:
    gc.collect()
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()


# -- the report --------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = [f"GPU: {results['device']}; bf16 matmul measured {results['peak_tflops']['measured']:.0f} TFLOP/s, "
             f"datasheet {results['peak_tflops'].get('datasheet', 0):.0f}", ""]  # fmt: skip
    lines += ["| case | batch | TFLOP/img | raw img/s | service img/s | service/raw | share of peak (measured / "
              "datasheet) | peak GiB | batched vs alone |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for case in results.get("cases", []):
        for run in case.get("runs", []):
            shares = f"{run.get('service_share_of_measured', run.get('share_of_measured', 0)):.0%} / " \
                     f"{run.get('service_share_of_datasheet', run.get('share_of_datasheet', 0)):.0%}"  # fmt: skip
            lines.append(
                f"| {case['case']} | {run['batch']} | {case['tflop_per_image']} | {run['raw_img_s']} | "
                f"{run.get('service_img_s', '-')} | {run.get('service_over_raw', '-')} | {shares} | "
                f"{run['peak_gib']} | {run.get('batched_vs_alone', '-')} |"
            )
    lines += [
        "",
        "| model | acceleration | s/img | speed-up | share of measured peak | compile s | pixels against plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in [*results.get("cases", []), results.get("qwen", {})]:
        for row in case.get("accelerations", []):
            outcome = row.get("pixels_vs_plain", row.get("error", row.get("skipped", "-")))
            lines.append(
                f"| {case['case']} | {row['variant']} | {row.get('s_per_image', '-')} | {row.get('speedup', '-')} | "
                f"{row.get('share_of_measured', '-')} | {row.get('compile_s', '-')} | {outcome} |"
            )
    lines += ["", f"skipped: {results.get('skipped') or 'nothing'}; elapsed {results.get('elapsed_s')} s"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--small", action="store_true", help="tiny copies on the CPU: checks that the script works")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds; later sections are skipped past it")
    parser.add_argument("--only", default="", help="comma-separated: sdxl, sd-turbo, hunyuan-dit, qwen-image, "
                        "z-image-turbo, flux2-klein-4b, qwen-image-2.1")  # fmt: skip
    parser.add_argument("--no-accelerations", action="store_true", help="skip SDXL's compile and channels_last runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cpu" if args.small or not torch.cuda.is_available() else "cuda")
    bench = Bench(args.out, device, args.small, args.budget, not args.no_accelerations)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU"
    peaks = {"measured": peak_matmul_tflops(device)}
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    if datasheet:
        peaks["datasheet"] = datasheet
    import diffusers

    bench.results = {"device": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
                     "peak_tflops": {k: round(v, 1) for k, v in peaks.items()}, "cases": [], "skipped": []}  # fmt: skip
    wanted = set(filter(None, args.only.split(",")))
    # Rough seconds each section needs on an H200 (build, save, count, raw, service, accelerations).
    needs = {"sdxl": 150, "sd-turbo": 90, "hunyuan-dit": 80, "qwen-image": 110, "z-image-turbo": 120,
             "flux2-klein-4b": 110, "qwen-image-2.1": 150}  # fmt: skip
    models = Path(tempfile.mkdtemp(prefix="aigc-gpu-models-"))
    for case in SMALL_CASES if args.small else GPU_CASES:
        if wanted and case.key not in wanted:
            continue
        if not args.small and bench.left() < needs[case.key]:
            bench.results["skipped"].append(f"{case.key}: time budget")
            continue
        try:
            bench.results["cases"].append(run_case(bench, case, models, peaks))
        except Exception as exc:
            bench.results["skipped"].append(f"{case.key}: {type(exc).__name__}: {exc}"[:500])
        bench.results.pop("partial", None)
        bench.save()
    if not wanted or "qwen-image" in wanted:
        if args.small or bench.left() >= needs["qwen-image"]:
            try:
                bench.results["qwen"] = qwen_accelerations(bench)
            except Exception as exc:
                bench.results["skipped"].append(f"qwen-image: {type(exc).__name__}: {exc}"[:500])
        else:
            bench.results["skipped"].append("qwen-image: time budget")
    bench.save()
    shutil.rmtree(models, ignore_errors=True)
    report = table(bench.results)
    (args.out / "gpu.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
