"""The model catalogue: built-in entries, operator files, and the default chosen for the hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_image.catalog import default_for, load_catalog
from aigc_image.config import ConfigError
from aigc_image.errors import UnknownModel
from aigc_image.hardware import GIB, Hardware


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
        (Hardware("cuda", "H100", 80 * GIB, 1), "Hunyuan:3.0"),
        (Hardware("cuda", "L40S", 48 * GIB, 1), "Hunyuan:dit-v1.2"),
        (Hardware("cuda", "RTX 4090", 24 * GIB, 1), "Hunyuan:dit-v1.2"),
        (Hardware("cuda", "RTX 3070", 8 * GIB, 1), "SD-Turbo:1.0"),
        (Hardware("cpu", "CPU", 24 * GIB, 0), "SDXL-Turbo:1.0"),
        (Hardware("cpu", "CPU", 8 * GIB, 0), "SD-Turbo:1.0"),
        (Hardware("cpu", "CPU", 4 * GIB, 0), "SD-Turbo:1.0"),  # nothing fits: the smallest, said so
    ],
)
def test_the_default_is_the_best_model_that_fits_the_hardware(hardware: Hardware, expected: str) -> None:
    entry, reason = default_for(load_catalog(), hardware)
    assert entry.label == expected
    assert hardware.describe() in reason
    assert ("no model fits" in reason) == (hardware.memory_gib < 5)


def test_a_laptop_without_a_gpu_never_gets_a_model_it_cannot_run() -> None:
    laptop = Hardware("cpu", "CPU", 16 * GIB, 0)
    entry, _ = default_for(load_catalog(), laptop)
    assert entry.cpu_memory_gb > 0 and entry.fits(laptop)
    assert not load_catalog().resolve("Hunyuan", "3.0").fits(laptop)


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
        ('name = "M"\nversion = "1"\nengine = "onnx"\n', "engine must be"),
        ('name = "M"\nversion = "1"\nengine = "diffusers"\n', "needs a source"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\nsteps = "ten"\n', "steps must be an integer"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\ncolour = 1\n', "colour"),
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
