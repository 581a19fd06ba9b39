"""Every built-in catalogue entry, on its real pipeline class, through the live service.

Tiny random-weight copies of the real classes (tests/tiny_models.py) are saved as diffusers
folders, and an operator registry file points the built-in entries at them, changing only their
native size and default steps so that CPUs make their images in a fraction of a second. Every
other key is the built-in one, so each entry is asked for everything it advertises, through the
official SDK: each aspect ratio and resolution (exact sizes), seeds, image counts, negative
prompts, guidance, steps, samplers, reference images, EnhancePrompt and panoramas; what it does not
offer is refused with its Code. Quantized variants run here in the quantizations a CPU can run
(int8); tests/test_quantization.py measures them against the unquantized model.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.media.sizes import ASPECT_RATIOS, OUTPUT_SIZES, native_size
from tests.helpers import (
    LiveServer,
    assert_error_envelope,
    create_request,
    download,
    live_server,
    sdk_client,
    wait_until_finished,
)
from tests.loopback import ImageServer
from tests.lora import make_lora
from tests.tiny_models import BUILDERS, save_tiny

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Model:
    label: str  # ModelName:ModelVersion
    pipeline: str  # the class its tiny copy is built from
    native: int  # native side for the test (the real ones are 512–2048)
    steps: int


MODELS = [
    Model("Qwen:2512", "QwenImagePipeline", 128, 3),
    Model("Qwen:2.1", "QwenImage21Pipeline", 128, 3),
    Model("Qwen:2.1-int8", "QwenImage21Pipeline", 128, 3),
    Model("Hunyuan:3.0", "HunyuanImagePipeline", 128, 3),
    Model("Qwen:0925", "QwenImagePipeline", 128, 3),
    Model("Z-Image:turbo", "ZImagePipeline", 128, 3),
    Model("Z-Image:turbo-int8", "ZImagePipeline", 128, 3),
    Model("FLUX.2:klein-4b", "Flux2KleinPipeline", 128, 2),
    Model("FLUX.2:klein-4b-int8", "Flux2KleinPipeline", 128, 2),
    Model("Hunyuan:dit-v1.2", "HunyuanDiTPipeline", 128, 3),
    Model("SD-Turbo:1.0", "StableDiffusionPipeline", 64, 1),
    Model("SDXL-Turbo:1.0", "StableDiffusionXLPipeline", 64, 1),
]
# Quantizations no CPU can run: the model refuses to load, with the reason (tests/test_quantization.py).
GPU_ONLY = {"float8", "nf4"}


def entry_of(model: Model) -> ModelEntry:
    name, version = model.label.split(":")
    return load_catalog().resolve(name, version)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: ImageServer) -> Iterator[LiveServer]:
    folders = tmp_path_factory.mktemp("models")
    lines = []
    for model in MODELS:
        name, version = model.label.split(":")
        folder = folders / model.pipeline
        if not folder.exists():
            save_tiny(model.pipeline, folder)
        lines += [
            "[[models]]",
            f'name = "{name}"',
            f'version = "{version}"',
            f'source = "{folder}"',
            f"width = {model.native}",
            f"height = {model.native}",
            f"steps = {model.steps}",
        ]
        if entry_of(model).image_source:
            lines.append(f'image_source = "{save_tiny("QwenImageEditPlusPipeline", folders / "edit")}"')
    # An operator's fine-tune: SD-Turbo with a LoRA bound at 0.8 and another one offered.
    sd = folders / "StableDiffusionPipeline"
    ink, paper = (make_lora(sd, folders / "loras", name, seed) for seed, name in enumerate(["ink", "paper"]))
    lines += ["[[models]]", 'name = "SD-Turbo"', 'version = "ink"', 'engine = "diffusers"', f'source = "{sd}"',
              'pipeline = "StableDiffusionPipeline"', "guidance_scale = 0.0", "negative_prompt = false",
              "width = 64", "height = 64", "steps = 1", "max_steps = 50", "size_multiple = 8",
              f'adapters = {{ ink = "{ink}", paper = "{paper}" }}', "loras = { ink = 0.8 }"]  # fmt: skip
    registry = folders / "models.toml"
    registry.write_text("\n".join(lines) + "\n")
    env = {
        "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry),
        "AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32",
        "AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false",
        "AIGC_IMAGE_WORKER_MAX_LOADED_MODELS": "6",
    }
    with live_server(tmp_path_factory.mktemp("real"), env=env) as live:
        yield live


def run_all(server: LiveServer, requests: list[dict[str, Any]], timeout: float = 240.0) -> list[Any]:
    """Create every task first (they queue), then wait for them all; the final replies, in order."""
    client = sdk_client(server)
    ids = [client.CreateAigcImageTask(create_request(**fields)).TaskId for fields in requests]
    return [wait_until_finished(client, task_id, timeout)[-1] for task_id in ids]


def decoded(reply: Any) -> list[Image.Image]:
    assert reply.Status == "DONE", reply.Message
    return [Image.open(io.BytesIO(download(url))) for url in reply.ImageUrls]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same_within_rounding(first: Image.Image, second: Image.Image) -> bool:
    """Equal but for float rounding, which differs with the batch size a pipeline runs at: at most
    one level of 255 on at most 0.1% of the pixels (docs/operations.md, batching)."""
    difference = np.abs(pixels(first) - pixels(second))
    return bool(difference.max() <= 1 and (difference > 0).mean() <= 0.001)


def base(model: Model, **fields: Any) -> dict[str, Any]:
    name, version = model.label.split(":")
    return {"Prompt": "a lighthouse at dusk", "ModelName": name, "ModelVersion": version, **fields}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.label)
def test_every_aspect_ratio_and_resolution_it_lists_comes_back_exact(server: LiveServer, model: Model) -> None:
    entry = entry_of(model)
    requests, expected = [], []
    for ratio in entry.aspect_ratios:  # alone: the model's own pixel count, in that shape
        requests.append(base(model, ExtraParameters={"AspectRatio": ratio}))
        expected.append(native_size(*ASPECT_RATIOS[ratio], model.native**2, entry.size_multiple))
    for resolution in entry.resolutions:  # with a ratio: the documented exact size
        requests.append(
            base(model, ExtraParameters={"AspectRatio": "16:9", "Resolution": resolution, "OutputFormat": "jpeg"})
        )
        expected.append(OUTPUT_SIZES[("16:9", resolution)])
    replies = run_all(server, requests)
    assert [decoded(reply)[0].size for reply in replies] == expected


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.label)
def test_seeds_counts_negative_prompts_and_guidance_each_do_what_they_say(server: LiveServer, model: Model) -> None:
    entry = entry_of(model)
    seed = json.dumps({"seed": 5})
    guided = 7.0 if entry.guidance_scale != 7.0 else 3.0
    requests = [
        base(model, OutputImageCount=entry.max_output_images, AdditionalParameters=seed),
        base(model, AdditionalParameters=seed),
        base(model, AdditionalParameters=json.dumps({"seed": 6})),
        base(model, AdditionalParameters=json.dumps({"seed": 5, "steps": model.steps + 1})),
    ]
    if entry.guidance:
        requests.append(base(model, AdditionalParameters=json.dumps({"seed": 5, "guidance_scale": guided})))
    if entry.negative_prompt:  # against the same guidance without one: guidance must be on for it to apply
        with_guidance = json.dumps({"seed": 5, "guidance_scale": 4.0})
        requests.append(base(model, AdditionalParameters=with_guidance))
        requests.append(base(model, NegativePrompt="fog, blur", AdditionalParameters=with_guidance))
    replies = run_all(server, requests)
    many, alone, other_seed, more_steps, *rest = [decoded(reply) for reply in replies]

    assert len(many) == entry.max_output_images
    assert len({image.tobytes() for image in many}) == entry.max_output_images  # each its own noise
    assert same_within_rounding(many[0], alone[0])  # image 0 of a count is the single image
    assert not np.array_equal(pixels(alone[0]), pixels(other_seed[0]))
    assert not np.array_equal(pixels(alone[0]), pixels(more_steps[0]))
    client = sdk_client(server)
    if entry.guidance:
        more_guidance = rest.pop(0)
        assert not np.array_equal(pixels(alone[0]), pixels(more_guidance[0]))
    else:  # a step-distilled model would ignore it
        with pytest.raises(TencentCloudSDKException) as refused:
            client.CreateAigcImageTask(create_request(**base(model, AdditionalParameters='{"guidance_scale": 4}')))
        assert_error_envelope(refused.value, "InvalidParameter.ModelNotSupported")
    if entry.negative_prompt:
        guided_only, negative = rest
        assert not np.array_equal(pixels(guided_only[0]), pixels(negative[0]))
        if entry.guidance_scale is not None and entry.guidance_scale <= 1:  # its default runs without guidance
            with pytest.raises(TencentCloudSDKException) as refused:
                client.CreateAigcImageTask(create_request(**base(model, NegativePrompt="fog")))
            assert_error_envelope(refused.value, "InvalidParameterValue")
    else:
        with pytest.raises(TencentCloudSDKException) as refused:
            client.CreateAigcImageTask(create_request(**base(model, NegativePrompt="fog")))
        assert_error_envelope(refused.value, "InvalidParameter.ModelNotSupported")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.label)
def test_every_sampler_it_lists_runs_and_others_are_refused(server: LiveServer, model: Model) -> None:
    entry = entry_of(model)
    steps = model.steps + 2  # at one step most samplers take the same single step
    requests = [base(model, AdditionalParameters=json.dumps({"seed": 5, "steps": steps}))]
    requests += [
        base(model, AdditionalParameters=json.dumps({"seed": 5, "steps": steps, "sampler": name}))
        for name in entry.samplers
    ]
    own, *chosen = [decoded(reply)[0] for reply in run_all(server, requests)]
    assert all(image.size == own.size for image in chosen)
    assert sum(not np.array_equal(pixels(own), pixels(image)) for image in chosen) >= len(chosen) - 1  # one is its own
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(server).CreateAigcImageTask(
            create_request(**base(model, AdditionalParameters=json.dumps({"sampler": "Euler ancestral"})))
        )
    assert_error_envelope(refused.value, "InvalidParameterValue")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.label)
def test_panoramas_and_enhanced_prompts(server: LiveServer, model: Model) -> None:
    if not entry_of(model).panorama:
        with pytest.raises(TencentCloudSDKException) as refused:
            sdk_client(server).CreateAigcImageTask(create_request(**base(model, SceneType="3d_panorama")))
        assert_error_envelope(refused.value, "InvalidParameter.ModelNotSupported")
        decoded(*run_all(server, [base(model, EnhancePrompt=True)]))
        return
    panorama, enhanced = run_all(server, [base(model, SceneType="3d_panorama"), base(model, EnhancePrompt=True)])
    [image] = decoded(panorama)
    assert image.width == 2 * image.height
    decoded(enhanced)


@pytest.mark.parametrize("model", [m for m in MODELS if entry_of(m).max_reference_images], ids=lambda m: m.label)
def test_reference_images_up_to_the_models_limit(server: LiveServer, images: ImageServer, model: Model) -> None:
    entry = entry_of(model)
    red = images.add(f"red-{model.native}.png", (96, 72), (220, 30, 30))
    blue = images.add(f"blue-{model.native}.png", (96, 72), (30, 30, 220))
    one = {"ImageInfos": [{"ImageUrl": red}], "AdditionalParameters": json.dumps({"seed": 3})}
    other = {"ImageInfos": [{"ImageUrl": blue}], "AdditionalParameters": json.dumps({"seed": 3})}
    requests = [base(model, **one), base(model, **other)]
    if entry.reference_strength:  # image-to-image: a one-step turbo model at half strength still denoises
        half = json.dumps({"seed": 3, "strength": 0.5})
        requests.append(base(model, ImageInfos=[{"ImageUrl": red}], AdditionalParameters=half))
    if entry.max_reference_images > 1:  # multi-reference editing
        infos = [{"ImageUrl": url} for url in (red, blue, red)[: entry.max_reference_images]]
        requests.append(base(model, ImageInfos=infos, AdditionalParameters=json.dumps({"seed": 3})))
    replies = run_all(server, requests)
    outputs = [decoded(reply)[0] for reply in replies]
    assert all(image.size == (model.native, model.native) for image in outputs)
    assert not np.array_equal(pixels(outputs[0]), pixels(outputs[1]))  # the result depends on the reference
    if entry.max_reference_images > 1:
        assert not np.array_equal(pixels(outputs[0]), pixels(outputs[-1]))
    too_many = [{"ImageUrl": red}] * (entry.max_reference_images + 1)
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(server).CreateAigcImageTask(create_request(**base(model, ImageInfos=too_many)))
    assert_error_envelope(refused.value, "InvalidParameterValue")


def test_lora_adapters_bound_chosen_and_refused_through_the_service(server: LiveServer) -> None:
    def ask(version: str, **additional: Any) -> dict[str, Any]:
        return {"Prompt": "a lighthouse at dusk", "ModelName": "SD-Turbo", "ModelVersion": version,
                "AdditionalParameters": json.dumps({"seed": 8, "steps": 3, **additional})}  # fmt: skip

    requests = [ask("1.0"), ask("ink"), ask("ink", loras={"ink": 0}), ask("ink", loras={"ink": 0, "paper": 1.0})]
    plain, bound, off, other = [pixels(decoded(reply)[0]) for reply in run_all(server, requests)]
    assert np.array_equal(off, plain)  # scale 0: the base model's own pixels
    assert not np.array_equal(bound, plain) and not np.array_equal(other, plain) and not np.array_equal(other, bound)
    client = sdk_client(server)
    for version, loras in (("ink", {"watercolor": 1.0}), ("1.0", {"ink": 1.0}), ("ink", {"ink": 9})):
        with pytest.raises(TencentCloudSDKException) as refused:
            client.CreateAigcImageTask(create_request(**ask(version, loras=loras)))
        assert_error_envelope(refused.value, "InvalidParameterValue")


def test_the_tiny_models_are_small(tmp_path: Path) -> None:
    for pipeline in {model.pipeline for model in MODELS}:
        folder = save_tiny(pipeline, tmp_path / pipeline)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 10_000_000, (pipeline, size)


def test_every_builtin_model_has_a_tiny_copy_and_runs_here() -> None:
    """A new built-in entry fails this until its class has a tiny copy and it runs in the tests above
    (or, for a quantization no CPU can run, until the same model unquantized does)."""
    served = {model.label: model for model in MODELS}
    for entry in load_catalog():
        if entry.engine != "diffusers":
            continue
        assert entry.pipeline in BUILDERS, f"{entry.label}: no tiny copy of {entry.pipeline} in tests/tiny_models.py"
        if entry.image_source:
            assert entry.image_pipeline in BUILDERS, f"{entry.label}: no tiny copy of {entry.image_pipeline}"
        if entry.quantization in GPU_ONLY:
            assert any(served_entry(m).source == entry.source and served_entry(m).quantization == "none"
                       for m in MODELS), entry.label  # fmt: skip
        else:
            assert entry.label in served, f"{entry.label} is not served in tests/test_real_pipelines.py"


def served_entry(model: Model) -> ModelEntry:
    return entry_of(model)
