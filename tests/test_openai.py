"""The OpenAI-compatible images API, driven by the official ``openai`` Python package against a live
server: generations, edits with uploaded images, models, and each error in OpenAI's shape."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from tests.helpers import OTHER_ID, SECRET_ID, SECRET_KEY, LiveServer, describe, download, live_server, sdk_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    terms = tmp_path_factory.mktemp("terms") / "terms.txt"
    terms.write_text("forbidden harbour\n")
    with live_server(tmp_path_factory.mktemp("openai"), env={"AIGC_IMAGE_MODERATION_TERM_FILES": str(terms)}) as live:
        yield live


def client(server: LiveServer, key: str = f"{SECRET_ID}:{SECRET_KEY}") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_generations_give_the_images_of_an_ordinary_task(server: LiveServer) -> None:
    raw = client(server).images.with_raw_response.generate(
        model="tiny-random", prompt="a lighthouse at dusk", n=2, size="64x64", response_format="b64_json"
    )
    result = raw.parse()
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in result.data]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    assert all("AIGC" in image.info for image in images)  # labelled like every task's images
    task_id = raw.headers["x-aigc-task-id"]
    described = describe(sdk_client(server), task_id)  # the same task through the MPS API
    assert described.Status == "DONE" and len(described.ImageUrls) == 2


def test_urls_model_versions_and_jpeg(server: LiveServer) -> None:
    result = client(server).images.generate(
        model="tiny-random:1", prompt="a harbour", response_format="url", extra_body={"output_format": "jpeg"}
    )
    [item] = result.data
    assert Image.open(io.BytesIO(download(item.url or ""))).format == "JPEG"


def test_edits_take_uploaded_images_as_references(server: LiveServer) -> None:
    result = client(server).images.edit(
        model="tiny-random", image=("red.png", png((64, 64), (230, 20, 20)), "image/png"), prompt="a red lighthouse",
        size="64x64", response_format="b64_json",
    )  # fmt: skip
    [item] = result.data
    assert Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))).size == (64, 64)


def test_models_lists_the_catalogue(server: LiveServer) -> None:
    ids = [model.id for model in client(server).models.list()]
    assert "tiny-random:1" in ids and "Qwen:0925" in ids


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda c: c.images.generate(model="dall-e-3", prompt="x"), openai.NotFoundError, "dall-e-3"),
        (lambda c: c.images.generate(model="tiny-random", prompt="x", size="7x7"), openai.BadRequestError, "size"),
        (lambda c: c.images.generate(model="tiny-random", prompt="x", style="natural"), openai.BadRequestError,
         "style"),
        (lambda c: c.images.generate(model="tiny-random", prompt="a forbidden harbour"), openai.BadRequestError,
         "content review"),
        (lambda c: c.images.generate(model="tiny-random", prompt=""), openai.BadRequestError, "prompt"),
        (lambda c: c.images.edit(model="tiny-random", prompt="x", image=("a.png", png((8, 8), (0, 0, 0))),
                                 mask=("m.png", png((8, 8), (0, 0, 0)))), openai.BadRequestError, "mask"),
        (lambda c: c.images.edit(model="tiny-random", prompt="x", image=("a.txt", b"not an image")),
         openai.BadRequestError, "PNG, JPEG or WebP"),
    ],
)  # fmt: skip
def test_errors_have_openai_shapes_and_statuses(server: LiveServer, call: object, error: type, fragment: str) -> None:
    with pytest.raises(error) as raised:
        call(client(server))  # type: ignore[operator]
    assert fragment in raised.value.message


def test_a_wrong_key_is_401_and_content_refusals_say_so(server: LiveServer) -> None:
    for key in (f"{SECRET_ID}:wrong", OTHER_ID, "", f"{OTHER_ID}:{SECRET_KEY}"):
        with pytest.raises(openai.AuthenticationError):
            client(server, key or "x").models.list()
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.generate(model="tiny-random", prompt="a forbidden harbour")
    assert refused.value.code == "content_policy_violation"


def test_limits_are_429_and_a_slow_task_is_504_with_its_task_id(tmp_path: Path) -> None:
    slow = tmp_path / "models.toml"
    slow.write_text('[[models]]\nname = "slow"\nversion = "1"\nengine = "tiny-random"\nsteps = 400\nmax_steps = 999\n'
                    "width = 64\nheight = 64\n")  # fmt: skip
    env = {"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(slow), "AIGC_IMAGE_API_OPENAI_TIMEOUT": "1",
           "AIGC_IMAGE_API_RATE_LIMIT": "1", "AIGC_IMAGE_API_RATE_BURST": "1"}  # fmt: skip
    with live_server(tmp_path / "data", env=env) as live:
        with pytest.raises(openai.APIStatusError) as timed_out:
            client(live).images.generate(model="slow", prompt="a lighthouse")
        assert timed_out.value.status_code == 504 and "4-AigcImage-" in timed_out.value.message
        errors = []
        for _ in range(3):  # quick refusals, within one second: the key's rate limit counts them
            try:
                client(live).images.generate(model="slow", prompt="a lighthouse", size="7x7")
            except openai.APIStatusError as exc:
                errors.append(exc.status_code)
        assert 429 in errors
        assert httpx.get(f"{live.url}/v1/models").status_code == 401
