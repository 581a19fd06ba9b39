"""Quantization at load (engines/quantize.py), on the tiny copies of the real classes: what a CPU can
run (torchao int8, GGUF denoiser files) takes less memory and stays within the documented distance
of the unquantized model's pixels (docs/models.md, Quantization); what it cannot run (float8, NF4)
is refused before anything loads, with the reason. The catalogue's memory figures come from the
real configs (bench/full_size.py), quantized as the engine quantizes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.loading import WORKING_ROOM, modules, weight_bytes
from aigc_image.errors import ModelUnavailable
from aigc_image.hardware import GIB, Hardware, default_for, fits
from bench import full_size
from tests.gguf_files import write_gguf
from tests.tiny_models import save_tiny

# The documented distance (docs/models.md): against the unquantized model, same seed, at 128 px.
MIN_PSNR_DB = 40.0
MAX_MEAN_DIFFERENCE = 1.0  # in levels of 255
FAMILIES = {
    "Qwen:2.1": "QwenImage21Pipeline",
    "Z-Image:turbo": "ZImagePipeline",
    "FLUX.2:klein-4b": "Flux2KleinPipeline",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantized")
    return {label: save_tiny(pipeline, root / pipeline) for label, pipeline in FAMILIES.items()}


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine("cpu", allow_download=False, max_loaded=8)


def tiny_entry(folders: dict[str, Path], label: str, **changes: object) -> ModelEntry:
    builtin = load_catalog().resolve(*label.split(":"))
    return builtin.changed(source=str(folders[label]), width=128, height=128, steps=4, **changes)


def generate(engine: DiffusersEngine, entry: ModelEntry) -> np.ndarray:
    request = GenerationRequest("a lighthouse at dusk", "", 1, 128, 128, 4, None, seed=3)
    [[image]] = engine.generate(entry, [request], lambda step, steps: None)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    mse = float(((first - second).astype(np.float64) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def weights(engine: DiffusersEngine, entry: ModelEntry) -> dict[str, int]:
    return {name: weight_bytes(module) for name, module in modules(engine.pipeline(entry)).items()}


@pytest.mark.parametrize("label", sorted(FAMILIES))
def test_int8_weights_take_a_third_of_the_memory_and_keep_the_pixels(
    engine: DiffusersEngine, folders: dict[str, Path], label: str
) -> None:
    plain = tiny_entry(folders, label)
    int8 = tiny_entry(folders, label, version="int8", quantization="int8")
    full, quantized = weights(engine, plain), weights(engine, int8)
    assert quantized["transformer"] < 0.35 * full["transformer"]  # float32 on a CPU: 4 bytes a weight, now 1
    assert quantized["text_encoder"] < full["text_encoder"]
    assert quantized["vae"] == full["vae"]  # kept in the model's dtype
    before, after = generate(engine, plain), generate(engine, int8)
    assert not np.array_equal(before, after)  # it did quantize
    assert psnr(before, after) >= MIN_PSNR_DB and np.abs(before - after).mean() <= MAX_MEAN_DIFFERENCE


def test_a_gguf_denoiser_file_loads_quantized_and_keeps_the_pixels(
    engine: DiffusersEngine, folders: dict[str, Path], tmp_path: Path
) -> None:
    label = "Qwen:2.1"  # its single-file layout is the diffusers one (ComfyUI's files load as they are)
    transformer = load_file(next((folders[label] / "transformer").glob("*.safetensors")))
    gguf = write_gguf(transformer, tmp_path / "qwen-image-2.1-Q8_0.gguf")
    plain = tiny_entry(folders, label)
    quantized = tiny_entry(folders, label, version="gguf", quantization="gguf", denoiser_file=str(gguf))
    assert weights(engine, quantized)["transformer"] < 0.35 * weights(engine, plain)["transformer"]
    parameter = next(engine.pipeline(quantized).transformer.parameters())
    assert type(parameter).__name__ == "GGUFParameter" or parameter.dtype == torch.float32  # norms stay float
    before, after = generate(engine, plain), generate(engine, quantized)
    assert psnr(before, after) >= MIN_PSNR_DB and np.abs(before - after).mean() <= MAX_MEAN_DIFFERENCE


@pytest.mark.parametrize(
    ("quantization", "reason"),
    [("float8", "float8 needs an NVIDIA GPU of compute capability 8.9 or later"), ("nf4", "nf4 needs a CUDA GPU")],
)
def test_a_quantization_the_cpu_cannot_run_is_refused_before_loading(
    engine: DiffusersEngine, folders: dict[str, Path], quantization: str, reason: str
) -> None:
    entry = tiny_entry(folders, "Z-Image:turbo", version=quantization, quantization=quantization)
    with pytest.raises(ModelUnavailable, match=f"quantization {quantization} cannot run here: {reason}"):
        engine.load(entry)
    assert entry.label not in engine.loaded()


def test_the_default_never_picks_a_quantization_the_device_cannot_run() -> None:
    catalog = load_catalog()
    ada = Hardware("cuda", "RTX 4090", 24 * GIB, 1, (8, 9))
    ampere = Hardware("cuda", "RTX 3090", 24 * GIB, 1, (8, 6))
    assert default_for(catalog, ada)[0].label == "Qwen:2.1-fp8"
    assert default_for(catalog, ampere)[0].label == "Qwen:2.1-int8"
    assert not fits(catalog.resolve("Qwen", "2.1-fp8"), ampere)
    assert not fits(catalog.resolve("Z-Image", "turbo-nf4"), Hardware("cpu", "CPU", 64 * GIB, 0))


@pytest.mark.parametrize(
    ("key", "labels"),
    [
        ("qwen-image-2.1", ["Qwen:2.1", "Qwen:2.1-fp8", "Qwen:2.1-int8"]),
        ("z-image-turbo", ["Z-Image:turbo", "Z-Image:turbo-int8", "Z-Image:turbo-nf4"]),
        ("flux2-klein-4b", ["FLUX.2:klein-4b", "FLUX.2:klein-4b-int8"]),
    ],
)
def test_the_catalogues_memory_figures_are_the_real_weights_quantized_plus_working_room(
    key: str, labels: list[str]
) -> None:
    """memory_gb: the weights of the real architecture (built on the meta device, parameter counts
    checked) in the entry's dtype and quantization, times the working room, rounded up."""
    pipe = full_size.build(key, "meta", torch.bfloat16)
    for label in labels:
        entry = load_catalog().resolve(*label.split(":"))
        quantization = {"float8": "int8"}.get(entry.quantization, entry.quantization)  # one byte a weight too
        assert entry.memory_gb == math.ceil(full_size.weight_gib(pipe, 2, quantization) * WORKING_ROOM), label
        if entry.cpu_memory_gb:  # float32, quantized as the entry says
            assert entry.cpu_memory_gb == math.ceil(full_size.weight_gib(pipe, 4, quantization) * WORKING_ROOM), label
