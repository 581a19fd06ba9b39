from __future__ import annotations

from pathlib import Path

import pytest

from aigc_image.config import ConfigError
from aigc_image.engines.registry import load_registry
from aigc_image.errors import ModelNotSupported


def test_builtin_registry_maps_mps_names_to_open_models() -> None:
    registry = load_registry()
    assert registry.default_model == "Hunyuan"
    assert registry.resolve(None, None).label == "Hunyuan:3.0"
    assert registry.resolve("Qwen", None).source == "Qwen/Qwen-Image"
    assert registry.resolve("tiny-random", None).engine == "tiny-random"
    assert {"Hunyuan", "Qwen", "SD-Turbo", "SDXL-Turbo", "tiny-random"} <= set(registry.names())


def test_unknown_names_and_versions_list_the_alternatives() -> None:
    registry = load_registry()
    with pytest.raises(ModelNotSupported, match="Qwen"):
        registry.resolve("Kling", None)
    with pytest.raises(ModelNotSupported, match=r"dit-v1\.2"):
        registry.resolve("Hunyuan", "4.0")


def test_operator_file_adds_and_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        'default_model = "Mine"\n'
        '[[models]]\nname = "Mine"\nversion = "2"\ndefault = true\nengine = "diffusers"\nsource = "/srv/mine"\n'
        'aspect_ratios = ["1:1"]\n'
        '[[models]]\nname = "Qwen"\nversion = "0925"\ndefault = true\nengine = "diffusers"\nsource = "/srv/qwen"\n'
    )
    registry = load_registry(str(extra))
    assert registry.resolve(None, None).source == "/srv/mine"
    assert registry.resolve(None, None).aspect_ratios == ("1:1",)
    assert registry.resolve("Qwen", None).source == "/srv/qwen"
    assert load_registry(str(extra), default_model="tiny-random").resolve(None, None).name == "tiny-random"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('name = "M"\nversion = "1"\nengine = "onnx"\n', "engine must be"),
        ('name = "M"\nversion = "1"\nengine = "diffusers"\n', "needs a source"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\nsteps = "ten"\n', "steps must be an integer"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\ncolour = 1\n', "colour"),
        ('name = "M"\nengine = "tiny-random"\n', "version is required"),
        ('name = "M"\nversion = "1"\nengine = "tiny-random"\ndtype = "int8"\n', "dtype"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(tmp_path: Path, entry: str, fragment: str) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text("[[models]]\n" + entry)
    with pytest.raises(ConfigError, match=fragment):
        load_registry(str(extra))


def test_default_model_must_exist() -> None:
    with pytest.raises(ConfigError, match="Nope"):
        load_registry(default_model="Nope")
