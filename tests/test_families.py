"""The per-family table (engines/families.py) against the classes it describes, and the catalogue's
entries against their families, on the tiny copies of the real classes."""

from __future__ import annotations

import itertools
from pathlib import Path

import diffusers
import pytest

from aigc_image.catalog import load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.calls import build_call, resampled
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.families import FAMILIES, disagreements, family_of, inferred
from aigc_image.engines.samplers import offered
from aigc_image.errors import ModelUnavailable, NotSupported
from tests.tiny_models import BUILDERS, save_tiny

# A tiny copy of every class in the table: the text-to-image ones are built, the image ones made from them.
IMAGE_CLASSES = {
    "StableDiffusionImg2ImgPipeline": "StableDiffusionPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLPipeline",
    "ZImageImg2ImgPipeline": "ZImagePipeline",
}


def tiny(class_name: str) -> object:
    if class_name in IMAGE_CLASSES:
        base = BUILDERS[IMAGE_CLASSES[class_name]]()
        return getattr(diffusers, class_name)(**base.components)
    return BUILDERS[class_name]()


@pytest.mark.parametrize("class_name", sorted(FAMILIES))
def test_each_row_agrees_with_what_its_class_signature_says(class_name: str) -> None:
    pipe = tiny(class_name)
    row, read = FAMILIES[class_name], inferred(pipe)
    assert type(pipe).__name__ == class_name
    assert (row.cfg, row.negative_prompt, row.references) == (read.cfg, read.negative_prompt, read.references)
    assert row.size_multiple % read.size_multiple == 0  # the table's multiple covers the VAE's and the patch's
    assert row.schedulers == read.schedulers
    assert dict(row.call_options) == dict(read.call_options)
    assert row.latents == read.latents or row.latents == "none"  # "none": a packed layout the roll would break


def test_every_table_class_has_a_tiny_copy_and_every_builtin_class_a_row() -> None:
    for class_name in FAMILIES:
        assert class_name in BUILDERS or class_name in IMAGE_CLASSES, class_name
    for entry in load_catalog():
        if entry.engine == "diffusers":
            assert entry.pipeline in FAMILIES, entry.label
            assert entry.image_pipeline in FAMILIES or entry.image_pipeline.startswith("AutoPipeline"), entry.label


@pytest.mark.parametrize("class_name", sorted(set(BUILDERS)))
def test_every_builtin_entry_fits_its_family(class_name: str) -> None:
    pipe = BUILDERS[class_name]()
    for entry in load_catalog():
        if entry.pipeline == class_name:
            assert disagreements(entry, pipe) == [], entry.label


def test_an_entry_promising_what_its_pipeline_cannot_do_refuses_to_load(tmp_path: Path) -> None:
    folder = save_tiny("Flux2KleinPipeline", tmp_path / "klein")
    klein = load_catalog().resolve("FLUX.2", "klein-4b").changed(source=str(folder))
    engine = DiffusersEngine("cpu", allow_download=False)
    wrong = klein.changed(guidance=True, negative_prompt=True, samplers=("DPM++ 2M",), size_multiple=8)
    with pytest.raises(ModelUnavailable) as refused:
        engine.load(wrong)
    message = str(refused.value)
    for fragment in ("set guidance = false", "set negative_prompt = false", "no sampler DPM++ 2M", "multiples of 16"):
        assert fragment in message
    engine.load(klein)  # the built-in keys load


def test_a_step_distilled_model_is_never_sent_a_guidance_it_would_ignore() -> None:
    pipe = BUILDERS["Flux2KleinPipeline"]()
    request = GenerationRequest("a lighthouse", "", 1, 64, 64, 2, None, seed=1)
    assert build_call(pipe, [request]).kwargs["guidance_scale"] == 1.0  # not the pipeline's default of 4
    with pytest.raises(NotSupported, match="step-distilled"):
        build_call(pipe, [GenerationRequest("a lighthouse", "", 1, 64, 64, 2, 4.0, seed=1)])


def test_qwen_image_21_sizes_references_to_the_output_and_serves_one_request_a_call() -> None:
    pipe = BUILDERS["QwenImage21Pipeline"]()
    family = family_of(pipe)
    assert not family.prompt_lists and family.size_multiple == 32
    call = build_call(pipe, [GenerationRequest("edit", "", 1, 96, 64, 2, None, seed=1, images=(tiny_image(),))])
    assert call.kwargs["output_resolution"] == 78  # the output's pixel count, not the pipeline's 1024 px default
    assert (call.width, call.height) == (96, 64)


def test_a_fixed_sigma_schedule_is_resampled_to_the_steps_asked_for() -> None:
    assert resampled([1.0, 0.5, 0.25, 0.125], 4) == [1.0, 0.5, 0.25, 0.125]
    stretched = resampled([1.0, 0.5, 0.25, 0.125], 7)
    assert len(stretched) == 7 and stretched[0] == 1.0 and stretched[-1] == 0.125
    assert all(a > b for a, b in itertools.pairwise(stretched))


def test_flow_families_offer_flow_samplers_and_z_image_not_unipc() -> None:
    assert family_of(BUILDERS["ZImagePipeline"]()).offered_samplers() == ["Euler", "Euler a"]
    assert "UniPC" in family_of(BUILDERS["Flux2KleinPipeline"]()).offered_samplers()
    assert offered("ddpm")[:2] == ["Euler", "Euler a"]


def tiny_image() -> object:
    from PIL import Image

    return Image.new("RGB", (48, 32), (200, 40, 40))
