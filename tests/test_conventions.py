"""How the engine calls each real pipeline class (engines/calls.py), checked on the tiny copies of
the real classes: every rule here exists because a class would otherwise mis-serve a request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.calls import build_call
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.loading import placement
from aigc_image.engines.seamless import LatentRoller
from aigc_image.errors import OutOfMemory, is_permanent
from tests.tiny_models import BUILDERS, save_tiny

GIB = 1024**3


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny(name, root / name) for name in BUILDERS}


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine("cpu", allow_download=False, max_loaded=8)


def entry(folders: dict[str, Path], label: str, pipeline: str, **changes: Any) -> ModelEntry:
    name, version = label.split(":")
    builtin = load_catalog().resolve(name, version)
    edit = str(folders["QwenImageEditPlusPipeline"]) if builtin.image_source else ""
    return builtin.changed(source=str(folders[pipeline]), image_source=edit, **changes)


def request(**fields: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse", "negative_prompt": "", "count": 1, "width": 64, "height": 64, "steps": 2,
        "guidance_scale": None, "seed": 1,
    }  # fmt: skip
    return GenerationRequest(**(values | fields))


def generate(engine: DiffusersEngine, model: ModelEntry, **fields: Any) -> np.ndarray:
    [[image]] = engine.generate(model, [request(**fields)], lambda step, steps: None)
    return np.asarray(image, dtype=np.int16)


def test_hunyuan_dit_makes_the_shape_asked_for_with_resolution_binning_off(
    engine: DiffusersEngine, folders: dict[str, Path]
) -> None:
    model = entry(folders, "Hunyuan:dit-v1.2", "HunyuanDiTPipeline")
    call = build_call(engine.pipeline(model), [request(width=96, height=64)])
    assert call.kwargs["use_resolution_binning"] is False
    assert generate(engine, model, width=96, height=64).shape == (64, 96, 3)  # 3:2 stays 3:2


def test_qwen_image_guidance_is_true_cfg_with_a_negative_prompt(
    engine: DiffusersEngine, folders: dict[str, Path]
) -> None:
    model = entry(folders, "Qwen:0925", "QwenImagePipeline")
    pipe = engine.pipeline(model)
    call = build_call(pipe, [request(guidance_scale=4.0)])
    assert call.kwargs["true_cfg_scale"] == 4.0 and call.kwargs["negative_prompt"] == [" "]  # CFG needs one
    assert "guidance_scale" not in call.kwargs  # ignored by non-distilled Qwen-Image
    call = build_call(pipe, [request(guidance_scale=4.0, negative_prompt="fog")])
    assert call.kwargs["negative_prompt"] == ["fog"]
    unguided, guided = (generate(engine, model, guidance_scale=g) for g in (1.0, 4.0))
    assert not np.array_equal(unguided, guided)


def test_hunyuan_image_guidance_goes_to_its_guiders_for_one_call(
    engine: DiffusersEngine, folders: dict[str, Path]
) -> None:
    model = entry(folders, "Hunyuan:3.0", "HunyuanImagePipeline")
    pipe = engine.pipeline(model)
    default_scale = pipe.guider.guidance_scale
    call = build_call(pipe, [request(guidance_scale=9.0)])
    assert {name: guider.guidance_scale for name, guider in call.guiders.items()} == {"guider": 9.0, "ocr_guider": 9.0}
    assert "guidance_scale" not in call.kwargs
    first, second = (generate(engine, model, guidance_scale=g) for g in (None, 9.0))
    assert not np.array_equal(first, second)
    assert pipe.guider.guidance_scale == default_scale  # restored after the call


def test_a_one_step_turbo_model_denoises_image_to_image_at_any_strength(
    engine: DiffusersEngine, folders: dict[str, Path]
) -> None:
    reference = Image.new("RGB", (80, 60), (220, 30, 30))
    for label, pipeline in (
        ("SD-Turbo:1.0", "StableDiffusionPipeline"),
        ("SDXL-Turbo:1.0", "StableDiffusionXLPipeline"),
    ):
        model = entry(folders, label, pipeline)
        for strength, runs in ((0.5, 2), (0.25, 4), (1.0, 1)):
            progress: list[tuple[int, int]] = []
            wanted = request(steps=1, guidance_scale=0.0, images=(reference,), strength=strength)
            [[image]] = engine.generate(model, [wanted], lambda done, total, seen=progress: seen.append((done, total)))
            assert image.size == (64, 64)
            assert build_call(engine.pipeline(model, images=True), [wanted]).kwargs["num_inference_steps"] == runs
            assert progress == [(1, 1)]  # progress counts the steps the pipeline really runs


def test_qwen_edits_with_up_to_three_references_sharing_the_text_encoder_and_vae(
    engine: DiffusersEngine, folders: dict[str, Path]
) -> None:
    model = entry(folders, "Qwen:0925", "QwenImagePipeline", steps=2)
    red, blue = (Image.new("RGB", (48, 48), color) for color in ((220, 30, 30), (30, 30, 220)))
    one = generate(engine, model, images=(red,), guidance_scale=4.0)
    three = generate(engine, model, images=(red, blue, red), guidance_scale=4.0)
    assert one.shape == three.shape == (64, 64, 3) and not np.array_equal(one, three)
    base, edit = engine.pipeline(model), engine.pipeline(model, images=True)
    assert type(edit).__name__ == "QwenImageEditPlusPipeline"
    assert edit.text_encoder is base.text_encoder and edit.vae is base.vae  # one copy of each in memory
    assert edit.transformer is not base.transformer  # the edit model's own weights


def test_vae_tiling_above_the_native_size_only(
    engine: DiffusersEngine, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = entry(folders, "SD-Turbo:1.0", "StableDiffusionPipeline", width=64, height=64)
    vae = engine.pipeline(model).vae
    tiled: list[bool] = []
    decode = type(vae).decode
    monkeypatch.setattr(
        type(vae), "decode", lambda self, *a, **k: (tiled.append(self.use_tiling), decode(self, *a, **k))[1]
    )
    generate(engine, model, width=64, height=64, steps=1)
    generate(engine, model, width=128, height=128, steps=1)
    assert tiled == [False, True] and not vae.use_tiling


def test_out_of_memory_ends_the_call_permanently_frees_and_the_next_call_works(
    engine: DiffusersEngine, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = entry(folders, "SD-Turbo:1.0", "StableDiffusionPipeline")
    unet = engine.pipeline(model).unet

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(unet, "forward", exhausted)
    with pytest.raises(OutOfMemory, match="ran out of memory generating 1 image") as caught:
        generate(engine, model, steps=1)
    assert is_permanent(caught.value)
    monkeypatch.undo()
    assert generate(engine, model, steps=1).shape == (64, 64, 3)


def test_a_pipeline_that_returns_another_size_fails_instead_of_being_stretched(
    engine: DiffusersEngine, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = entry(folders, "Hunyuan:dit-v1.2", "HunyuanDiTPipeline")
    pipe = engine.pipeline(model)
    monkeypatch.setattr(
        type(pipe), "__call__", lambda self, **kwargs: type("Out", (), {"images": [Image.new("RGB", (64, 64))]})
    )
    with pytest.raises(Exception, match="made 64x64 images when asked for 96x64") as caught:
        engine.generate(model, [request(width=96, height=64)], lambda s, n: None)
    assert is_permanent(caught.value)


@pytest.mark.parametrize(
    ("sizes_gib", "usable_gib", "expected"),
    [
        ([16, 41, 0.3], 80, "resident"),  # Qwen-Image on an 80 GB GPU
        ([16, 41, 0.3], 60, "model offload"),  # one component at a time fits
        ([16, 41, 0.3], 24, "group offload"),  # not even the transformer fits
    ],
)
def test_a_model_too_large_for_the_gpu_is_offloaded_not_refused(
    sizes_gib: list[float], usable_gib: float, expected: str
) -> None:
    assert placement([int(s * GIB) for s in sizes_gib], usable_gib * GIB) == expected


def test_latents_roll_by_whole_columns_and_come_home_after_the_last_step() -> None:
    grid = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)  # (batch, channels, rows, columns)
    roller = LatentRoller(latent_width=6, steps=3)
    moved = roller.after_step(grid, last=False)
    assert torch.equal(moved, torch.roll(grid, roller.shift, dims=-1)) and roller.shift == 2
    assert torch.equal(roller.after_step(roller.after_step(moved, last=False), last=True), grid)

    packed = torch.arange(1 * 2 * 3 * 5, dtype=torch.float32).reshape(1, 2 * 3, 5)  # 2 rows × 3 columns of tokens
    roller = LatentRoller(latent_width=6, steps=2, packed_patch=2, latent_height=4)
    rolled = roller.after_step(packed, last=False)
    assert torch.equal(rolled.reshape(1, 2, 3, 5), torch.roll(packed.reshape(1, 2, 3, 5), roller.shift, dims=2))
    assert torch.equal(roller.after_step(rolled, last=True), packed)


def seam_ratio(image: np.ndarray) -> float:
    """The jump across the left–right seam, over the mean jump between neighbouring columns."""
    wrap = np.abs(image[:, 0] - image[:, -1]).mean()
    interior = np.abs(image[:, 1:] - image[:, :-1]).mean()
    return float(wrap / interior)


@pytest.fixture(scope="module")
def seams(engine: DiffusersEngine, folders: dict[str, Path]) -> Iterator[dict[str, tuple[float, float]]]:
    """Per transformer model: the mean seam ratio of panoramas and of normal 2:1 images, 6 seeds each."""
    found = {}
    for label, pipeline in (
        ("Hunyuan:3.0", "HunyuanImagePipeline"),
        ("Hunyuan:dit-v1.2", "HunyuanDiTPipeline"),
        ("Qwen:0925", "QwenImagePipeline"),
        ("Z-Image:turbo", "ZImagePipeline"),
        ("FLUX.2:klein-4b", "Flux2KleinPipeline"),
    ):
        model = entry(folders, label, pipeline)
        ratios = {
            panorama: np.mean(
                [
                    seam_ratio(generate(engine, model, width=256, height=128, steps=8, seed=seed, panorama=panorama))
                    for seed in range(6)
                ]
            )
            for panorama in (False, True)
        }
        found[label] = (float(ratios[True]), float(ratios[False]))
    yield found


@pytest.mark.parametrize("label", ["Hunyuan:3.0", "Hunyuan:dit-v1.2", "Qwen:0925", "Z-Image:turbo", "FLUX.2:klein-4b"])
def test_transformer_panoramas_join_at_the_seam_like_anywhere_inside(
    seams: dict[str, tuple[float, float]], label: str
) -> None:
    panorama, normal = seams[label]
    assert abs(panorama - 1) < 0.15  # the seam is like any pair of neighbouring columns
    assert abs(normal - 1) > 2 * abs(panorama - 1)  # a normal image's edges are not
