"""Each CreateAigcImageTask parameter changes the images as documented: through the official SDK
against a live server (tiny-random), the images downloaded and decoded."""

from __future__ import annotations

import io
import json
import sqlite3
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aigc_image.media.labels import XMP_NAMESPACE
from tests.helpers import LiveServer, create_request, download, sdk_client, wait_until_finished

pytestmark = pytest.mark.slow


def generate(server: LiveServer, **fields: Any) -> tuple[str, list[Image.Image], list[bytes]]:
    """Create a task with ``fields``, wait for DONE; returns its id, decoded images and raw files."""
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse", **fields)).TaskId
    final = wait_until_finished(client, task_id)[-1]
    assert final.Status == "DONE", final.Message
    files = [download(url) for url in final.ImageUrls]
    return task_id, [Image.open(io.BytesIO(data)) for data in files], files


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("16:9", "720P", (1280, 720)),
        ("9:16", "1080P", (1080, 1920)),
        ("21:9", "720P", (1680, 720)),
        ("", "2K", (1440, 1440)),
    ],
)
def test_aspect_ratio_and_resolution_give_the_documented_size(
    server: LiveServer, aspect_ratio: str, resolution: str, size: tuple[int, int]
) -> None:
    extra = {"Resolution": resolution, "OutputFormat": "jpeg"} | ({"AspectRatio": aspect_ratio} if aspect_ratio else {})
    _, [image], _ = generate(server, ExtraParameters=extra)
    assert image.size == size and image.format == "JPEG"


def test_an_aspect_ratio_alone_keeps_the_models_pixel_count(server: LiveServer) -> None:
    _, [image], _ = generate(server, ExtraParameters={"AspectRatio": "16:9"})
    assert image.size == (80, 48)  # tiny-random: 64×64 native, sides multiples of 16


def test_a_free_size_is_generated_near_it_and_delivered_exactly(server: LiveServer) -> None:
    _, [image], _ = generate(server, AdditionalParameters=json.dumps({"size": "100x60"}))
    assert image.size == (100, 60)


def test_the_same_seed_gives_the_same_image_and_another_seed_another(server: LiveServer) -> None:
    seeded = {"AdditionalParameters": json.dumps({"seed": 1234})}
    first, [a], _ = generate(server, **seeded)
    second, [b], _ = generate(server, **seeded)
    _, [c], _ = generate(server, AdditionalParameters=json.dumps({"seed": 1235}))
    assert first != second
    assert np.array_equal(pixels(a), pixels(b))  # identical pixels; the files differ in their ProduceID
    assert not np.array_equal(pixels(a), pixels(c))


def test_without_a_seed_each_task_draws_one_and_records_it(server: LiveServer) -> None:
    first, [a], _ = generate(server)
    second, [b], _ = generate(server)
    assert not np.array_equal(pixels(a), pixels(b))
    with sqlite3.connect(server.db_path) as db:
        seeds = [
            json.loads(db.execute("SELECT spec FROM tasks WHERE task_id = ?", (t,)).fetchone()[0])["seed"]
            for t in (first, second)
        ]
    assert all(isinstance(seed, int) for seed in seeds) and seeds[0] != seeds[1]
    _, [again], _ = generate(server, AdditionalParameters=json.dumps({"seed": seeds[0]}))
    assert np.array_equal(pixels(a), pixels(again))  # the recorded seed reproduces the image


@pytest.mark.parametrize(
    "change",
    [
        {"AdditionalParameters": json.dumps({"seed": 7, "steps": 3})},
        {"AdditionalParameters": json.dumps({"seed": 7, "guidance_scale": 1.5})},
        {"AdditionalParameters": json.dumps({"seed": 7}), "NegativePrompt": "blurry"},
    ],
    ids=["steps", "guidance_scale", "NegativePrompt"],
)
def test_steps_guidance_and_negative_prompt_change_the_image(server: LiveServer, change: dict[str, Any]) -> None:
    _, [baseline], _ = generate(server, AdditionalParameters=json.dumps({"seed": 7}))
    _, [changed], _ = generate(server, **change)
    assert not np.array_equal(pixels(baseline), pixels(changed))


def test_output_image_count_returns_that_many_different_images(server: LiveServer) -> None:
    _, images, _ = generate(server, OutputImageCount=3, AdditionalParameters=json.dumps({"seed": 3}))
    assert len(images) == 3
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_logo_add_marks_the_bottom_right_corner_with_text_at_least_5_percent_high(server: LiveServer) -> None:
    fields = {"AdditionalParameters": json.dumps({"seed": 11})}
    _, [plain], _ = generate(server, ExtraParameters={"AspectRatio": "16:9", "Resolution": "720P"}, **fields)
    _, [marked], _ = generate(
        server, ExtraParameters={"AspectRatio": "16:9", "Resolution": "720P", "LogoAdd": 1}, **fields
    )
    changed = np.argwhere(np.abs(pixels(plain) - pixels(marked)).sum(axis=2) > 0)
    assert len(changed)
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    assert left > 1280 / 2 and top > 720 / 2, "the mark is not in the bottom-right corner"
    assert bottom - top + 1 >= 0.05 * 720, "the mark is smaller than 5% of the shorter side"
    assert right - left < 1280 / 2 and bottom - top < 720 / 4, "the mark covers too much of the image"
    # The text is white on a darkened backdrop: bright pixels appear where there were none.
    region = pixels(marked)[top : bottom + 1, left : right + 1]
    assert (region.min(axis=2) > 240).sum() > 100


@pytest.mark.parametrize("output_format", ["png", "jpeg"])
def test_every_image_carries_the_implicit_aigc_label(server: LiveServer, output_format: str) -> None:
    task_id, images, files = generate(server, OutputImageCount=2, ExtraParameters={"OutputFormat": output_format})
    for index, (image, data) in enumerate(zip(images, files, strict=True)):
        if output_format == "png":
            label = json.loads(image.info["AIGC"])
        else:
            xmp = image.info["xmp"].decode()
            assert XMP_NAMESPACE in xmp
            label = json.loads(_xmp_attribute(xmp, "TC260:AIGC"))
        assert label["Label"] == "1"
        assert label["ContentProducer"] == "aigc-image"
        assert label["ProduceID"] == f"{task_id}-{index}"
        assert set(label) == {
            "Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
            "ReservedCode2",
        }  # fmt: skip
        assert data.count(b"TC260:AIGC") == 1


def _xmp_attribute(xmp: str, name: str) -> str:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(xmp[xmp.index("<x:xmpmeta") : xmp.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    for element in root.iter():
        for key, value in element.attrib.items():
            if key == "{" + XMP_NAMESPACE + "}" + name.split(":")[1]:
                return value
    raise AssertionError(f"{name} not in the XMP packet")
