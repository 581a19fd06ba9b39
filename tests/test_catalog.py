"""The model catalogue: built-in entries, operator files, and the default chosen for the hardware."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from aigc_image.catalog import ModelLabel, load_catalog
from aigc_image.config import ConfigError
from aigc_image.errors import UnknownModel
from aigc_image.hardware import GIB, Hardware, default_for, fits
from aigc_image.media.sizes import ASPECT_RATIOS, SHORTER_SIDE
from aigc_image.tasks import AspectRatio, Resolution
from tests.helpers import ROOT
from tests.test_layers import imports_of


def test_builtin_catalogue_maps_mps_names_to_open_models() -> None:
    catalog = load_catalog()
    assert catalog.resolve("Hunyuan", None).label == "Hunyuan:3.0"
    assert catalog.resolve("Qwen", None).source == "Qwen/Qwen-Image"
    assert catalog.resolve("tiny-random", None).engine == "tiny-random"
    assert {"Hunyuan", "Qwen", "SD-Turbo", "SDXL-Turbo", "tiny-random"} <= set(catalog.names())
    assert catalog.default_label == ""  # nothing configured: the host's hardware decides


def test_unknown_names_and_versions_list_the_alternatives() -> None:
    catalog = load_catalog()
    with pytest.raises(UnknownModel, match="Qwen"):
        catalog.resolve("Kling", None)
    with pytest.raises(UnknownModel, match=r"dit-v1\.2"):
        catalog.resolve("Hunyuan", "4.0")


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (Hardware("cuda", "H100", 80 * GIB, 1, (9, 0)), "Qwen:2512"),
        (Hardware("cuda", "L40S", 48 * GIB, 1, (8, 9)), "Qwen:2.1"),
        (Hardware("cuda", "RTX 4090", 24 * GIB, 1, (8, 9)), "Qwen:2.1-fp8"),
        (Hardware("cuda", "RTX 3090", 24 * GIB, 1, (8, 6)), "Qwen:2.1-int8"),
        (Hardware("cuda", "RTX 4080", 16 * GIB, 1, (8, 9)), "Z-Image:turbo-int8"),
        (Hardware("cuda", "RTX 3060", 12 * GIB, 1, (8, 6)), "Z-Image:turbo-nf4"),
        (Hardware("cuda", "RTX 3070", 8 * GIB, 1, (8, 6)), "SD-Turbo:1.0"),
        (Hardware("cpu", "CPU", 32 * GIB, 0), "Z-Image:turbo-int8"),
        (Hardware("cpu", "CPU", 16 * GIB, 0), "Z-Image:turbo-int8"),
        (Hardware("cpu", "CPU", 8 * GIB, 0), "SD-Turbo:1.0"),
        (Hardware("cpu", "CPU", 4 * GIB, 0), "SD-Turbo:1.0"),  # nothing fits: the smallest, said so
    ],
)
def test_the_default_is_the_best_model_that_fits_the_hardware(hardware: Hardware, expected: str) -> None:
    """The tiers of docs/models.md's ranking: GPUs of 12 to 80 GB, CPUs with 16 and 32 GB of RAM."""
    entry, reason = default_for(load_catalog(), hardware)
    assert entry.label == expected
    assert hardware.describe() in reason
    assert ("no model fits" in reason) == (hardware.memory_gib < 5)


def test_a_laptop_without_a_gpu_never_gets_a_model_it_cannot_run() -> None:
    laptop = Hardware("cpu", "CPU", 16 * GIB, 0)
    entry, _ = default_for(load_catalog(), laptop)
    assert entry.cpu_memory_gb > 0 and fits(entry, laptop)
    assert not fits(load_catalog().resolve("Hunyuan", "3.0"), laptop)


def test_operator_file_adds_entries_and_changes_builtin_ones_key_by_key(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        'default_model = "Mine"\n'
        '[[models]]\nname = "Mine"\nversion = "2"\ndefault = true\nengine = "diffusers"\nsource = "/srv/mine"\n'
        'aspect_ratios = ["1:1"]\n'
        '[[models]]\nname = "Qwen"\nversion = "0925"\nsource = "/srv/qwen"\n'
    )
    catalog = load_catalog(str(extra))
    assert catalog.resolve(None, None).source == "/srv/mine"
    assert catalog.resolve(None, None).aspect_ratios == ("1:1",)
    qwen = catalog.resolve("Qwen", None)
    assert qwen.source == "/srv/qwen"
    assert qwen.pipeline == "QwenImagePipeline" and qwen.max_reference_images == 3  # the rest is kept
    assert load_catalog(str(extra), default_model="tiny-random").resolve(None, None).name == "tiny-random"
    assert load_catalog(str(extra), default_model="Hunyuan:dit-v1.2").default.label == "Hunyuan:dit-v1.2"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('name = "M"\nversion = "1"\nengine = "onnx"\n', "engine: unknown 'onnx'; known: 'diffusers' or 'tiny-random'"),
        ('name = "M"\nversion = "1"\nengine = "diffusers"\n', "needs a source"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\nsteps = "ten"\n', "steps must be an integer"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\ncolour = 1\n', "unknown key colour"),
        ('name = "M"\nengine = "tiny-random"\n', "version is required"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\ndtype = "int8"\n', "dtype"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\nmemory_gb = -1\n', "must not be negative"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\nimage_shared = ["vae"]\n', "needs image_source"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(tmp_path: Path, entry: str, fragment: str) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text("[[models]]\n" + entry)
    with pytest.raises(ConfigError, match=fragment):
        load_catalog(str(extra))


def test_default_model_must_exist() -> None:
    with pytest.raises(ConfigError, match="Nope"):
        load_catalog(default_model="Nope")


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [("Qwen", "Qwen", None), ("Qwen:0925", "Qwen", "0925"), (" Hunyuan:dit-v1.2 ", "Hunyuan", "dit-v1.2")],
)
def test_a_model_label_is_a_name_or_a_name_and_version(text: str, name: str, version: str | None) -> None:
    label = ModelLabel.parse(text)
    assert (label.name, label.version) == (name, version)
    assert str(label) == text.strip()


@pytest.mark.parametrize("text", ["", ":1", "Qwen:", "Qwen:1:2"])
def test_a_malformed_model_label_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="Name or Name:Version"):
        ModelLabel.parse(text)


def test_the_catalogue_imports_only_config_errors_and_tasks() -> None:
    modules = {name.split(".")[1] for name in imports_of(ROOT / "aigc_image" / "catalog.py")}
    assert modules <= {"config", "errors", "tasks"}


def test_the_ratio_and_resolution_vocabulary_is_the_size_tables() -> None:
    assert tuple(ASPECT_RATIOS) == get_args(AspectRatio)
    assert tuple(SHORTER_SIDE) == get_args(Resolution)


def test_an_entry_changed_is_checked_again() -> None:
    entry = load_catalog().resolve("tiny-random", None)
    assert entry.changed(steps=4).steps == 4
    with pytest.raises(ValidationError, match="max_steps must be at least steps"):
        entry.changed(steps=2000)


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ('quantization = "gguf"\n', "gguf"),
        ('denoiser_file = "/srv/q.gguf"\n', "gguf"),
        ('denoiser_file = "/srv/q.bin"\n', "denoiser_file must be"),
        ('source_config = "/srv/cfg"\n', "source_config is for a single-file source"),
        ("loras = { ink = 0.5 }\n", "loras names adapters that are not in adapters: ink"),
        ('adapters = { ink = "/srv/ink.safetensors" }\nloras = { ink = 9.0 }\n', "between -4 and 4"),
        ('samplers = ["k_euler"]\n', "samplers: unknown 'k_euler'"),
        ('quantization = "int4"\n', "quantization: unknown 'int4'"),
    ],
)
def test_new_keys_are_checked(tmp_path: Path, keys: str, fragment: str) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text('[[models]]\nname = "M"\nversion = "1"\nengine = "diffusers"\nsource = "/srv/m"\n' + keys)
    with pytest.raises(ConfigError, match=fragment):
        load_catalog(str(extra))


def test_adapters_are_files_or_tables_and_loras_bind_them(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        '[[models]]\nname = "Ink"\nversion = "1"\nengine = "diffusers"\nsource = "/srv/sdxl"\n'
        'adapters = { ink = "/srv/ink.safetensors", paper = { source = "org/l", weight_name = "paper.safetensors" } }\n'
        "loras = { ink = 0.8 }\n"
    )
    entry = load_catalog(str(extra)).resolve("Ink", "1")
    assert entry.adapters["ink"].source == "/srv/ink.safetensors"
    assert entry.adapters["paper"].weight_name == "paper.safetensors"
    assert entry.loras == {"ink": 0.8}


def test_changing_a_builtin_models_quantization_needs_its_own_memory_figures(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text('[[models]]\nname = "Qwen"\nversion = "0925"\nquantization = "int8"\n')
    with pytest.raises(ConfigError, match="needs its own memory_gb"):
        load_catalog(str(extra))
    extra.write_text('[[models]]\nname = "Qwen"\nversion = "0925"\nquantization = "int8"\nmemory_gb = 40\n')
    assert load_catalog(str(extra)).resolve("Qwen", "0925").memory_gb == 40
