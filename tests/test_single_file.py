"""Single-file checkpoints: a ``source`` that is one ``.safetensors`` file in the original layout (as
A1111 and ComfyUI users have them) loads with ``from_single_file``, offline with ``source_config``; a
``denoiser_file`` replaces a source's denoiser. Each makes exactly the pixels of the diffusers model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aigc_image import weights
from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.tiny_random import build_pipeline
from aigc_image.errors import ModelUnavailable
from tests.single_file import write_sd1_checkpoint
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny SD 1.x pipeline as a diffusers folder and as one original-layout checkpoint."""
    root = tmp_path_factory.mktemp("single-file")
    pipe = build_pipeline()
    pipe.save_pretrained(root / "diffusers")
    return root / "diffusers", write_sd1_checkpoint(pipe, root / "tiny-sd15.safetensors")


def entry(**keys: object) -> ModelEntry:
    values = {"name": "Mine", "version": "1", "engine": "diffusers", "pipeline": "StableDiffusionPipeline",
              "width": 64, "height": 64, "steps": 3, "guidance_scale": 6.0} | keys  # fmt: skip
    return ModelEntry.model_validate(values)


def generate(engine: DiffusersEngine, model: ModelEntry) -> np.ndarray:
    request = GenerationRequest("a lighthouse", "fog", 1, 64, 64, 3, model.guidance_scale, seed=4)
    [[image]] = engine.generate(model, [request], lambda step, steps: None)
    return np.asarray(image, dtype=np.int16)


def test_a_single_file_checkpoint_makes_the_pixels_of_its_diffusers_model(sd1: tuple[Path, Path]) -> None:
    folder, checkpoint = sd1
    engine = DiffusersEngine("cpu", allow_download=False)
    from_folder = entry(source=str(folder))
    from_file = entry(version="file", source=str(checkpoint), source_config=str(folder))
    assert from_file.single_file and not from_folder.single_file
    assert np.array_equal(generate(engine, from_file), generate(engine, from_folder))


def test_offline_a_checkpoint_without_source_config_says_what_it_needs(sd1: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = sd1
    alone = shutil.copy(checkpoint, tmp_path / "somewhere.safetensors")
    engine = DiffusersEngine("cpu", allow_download=False)
    with pytest.raises(ModelUnavailable, match="Set 'source_config' to a diffusers folder"):
        engine.load(entry(source=str(alone)))
    with pytest.raises(ModelUnavailable, match="does not exist"):
        engine.load(entry(version="2", source=str(tmp_path / "missing.safetensors")))


def test_a_denoiser_file_replaces_the_sources_denoiser(tmp_path: Path) -> None:
    folder = save_tiny("QwenImage21Pipeline", tmp_path / "qwen")
    weights = next((folder / "transformer").glob("*.safetensors"))
    kept = shutil.copy(weights, tmp_path / "qwen_image_2.1_bf16.safetensors")  # as ComfyUI keeps it
    builtin = load_catalog().resolve("Qwen", "2.1").changed(source=str(folder), width=64, height=64, steps=3)
    request = GenerationRequest("a lighthouse", "", 1, 64, 64, 3, None, seed=4)
    [[before]] = DiffusersEngine("cpu", allow_download=False).generate(builtin, [request], lambda s, n: None)
    with weights.open("r+b") as broken:  # the source's own denoiser weights are gone: the file's are used
        broken.truncate(0)
    engine = DiffusersEngine("cpu", allow_download=False)
    with pytest.raises(ModelUnavailable):
        engine.load(builtin)
    replaced = builtin.changed(version="file", denoiser_file=str(kept))
    [[after]] = engine.generate(replaced, [request], lambda step, steps: None)
    assert np.array_equal(np.asarray(before), np.asarray(after))


def test_models_and_pull_see_a_checkpoint_file_and_its_configs(sd1: tuple[Path, Path], tmp_path: Path) -> None:
    folder, checkpoint = sd1
    present = weights.status(entry(source=str(checkpoint), source_config=str(folder)))
    assert present.where == "local folder" and present.present and present.size_bytes > checkpoint.stat().st_size
    missing = weights.status(entry(source=str(tmp_path / "gone.safetensors"), source_config=str(folder)))
    assert not missing.present
    assert weights.pull(entry(source=str(checkpoint), source_config=str(folder))) == []  # nothing to download
