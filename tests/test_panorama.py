"""SceneType 3d_panorama: a 2:1 image whose left and right edges join.

The seam is measured on the real tiny pipeline. With circular padding along x the network sees
the image as a cylinder, so rolling the initial latents sideways rolls the finished image by the
same amount, exactly: no column is an edge. A normal image fails this at its edges, which is
where a seam would show.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_image.catalog import load_catalog
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.seamless import convolutional_parts, seamless_x
from aigc_image.engines.tiny_random import build_pipeline
from tests.helpers import LiveServer, create_request, download, sdk_client, wait_until_finished

LATENT_SHIFT = 4  # latent columns; the VAE makes each 8 pixels
PIXEL_SHIFT = 8 * LATENT_SHIFT


@pytest.fixture(scope="module")
def pipe() -> object:
    pipeline = build_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def render(pipe: object, latents: torch.Tensor, panorama: bool) -> np.ndarray:
    seam = seamless_x(*convolutional_parts(pipe)) if panorama else torch.no_grad()
    with seam, torch.no_grad():
        result = pipe(  # type: ignore[operator]
            "a mountain panorama", num_inference_steps=8, width=128, height=64, latents=latents.clone(),
            guidance_scale=6.0, output_type="np",
        )  # fmt: skip
    return np.asarray(result.images[0])


def shift_error(pipe: object, panorama: bool) -> np.ndarray:
    """Per-column error of "roll the latents, get the image rolled" (0 everywhere: no seam)."""
    latents = torch.randn((1, 4, 8, 16), generator=torch.Generator("cpu").manual_seed(3))
    image = render(pipe, latents, panorama)
    rolled = render(pipe, torch.roll(latents, LATENT_SHIFT, dims=3), panorama)
    return np.abs(image - np.roll(rolled, -PIXEL_SHIFT, axis=1)).mean(axis=(0, 2))


def test_a_panorama_has_no_seam_and_a_normal_image_has_one_at_its_edges(pipe: object) -> None:
    panorama = shift_error(pipe, panorama=True)
    normal = shift_error(pipe, panorama=False)
    edges = np.r_[0:8, 120:128]  # the outermost columns of the unrolled image
    middle = slice(48, 80)
    assert panorama.max() < 1e-4  # every column, the seam included, is an interior column
    assert normal[edges].mean() > 4 * normal[middle].mean()  # the normal image's edges do not join


def test_the_circular_padding_is_undone_after_the_task(pipe: object) -> None:
    latents = torch.randn((1, 4, 8, 16), generator=torch.Generator("cpu").manual_seed(1))
    before = render(pipe, latents, panorama=False)
    render(pipe, latents, panorama=True)
    assert np.array_equal(render(pipe, latents, panorama=False), before)
    assert not [m for m in pipe.unet.modules() if "_conv_forward" in vars(m)]  # type: ignore[attr-defined]


def test_the_engine_makes_panoramas_on_request() -> None:
    engine = DiffusersEngine("cpu")
    entry = load_catalog(default_model="tiny-random").resolve(None, None)
    request = GenerationRequest("a beach", "", 1, 96, 48, 4, 6.0, seed=2, panorama=True)
    [[image]] = engine.generate(entry, [request], lambda step, steps: None)
    assert image.size == (96, 48)
    plain = GenerationRequest("a beach", "", 1, 96, 48, 4, 6.0, seed=2)
    [[normal]] = engine.generate(entry, [plain], lambda s, n: None)
    assert not np.array_equal(np.asarray(image), np.asarray(normal))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fields", "size"),
    [({}, (96, 48)), ({"ExtraParameters": {"Resolution": "720P"}}, (1440, 720)),
     ({"AdditionalParameters": json.dumps({"size": "200x100"})}, (200, 100))],
)  # fmt: skip
def test_scene_type_3d_panorama_through_the_sdk_is_2_to_1(server: LiveServer, fields: dict, size: tuple) -> None:  # type: ignore[type-arg]
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a beach", SceneType="3d_panorama", **fields)).TaskId
    final = wait_until_finished(client, task_id)[-1]
    assert final.Status == "DONE", final.Message
    assert Image.open(io.BytesIO(download(final.ImageUrls[0]))).size == size
