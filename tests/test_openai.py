"""The OpenAI-compatible images API, driven by the official ``openai`` Python package against a live
server: generations, edits with uploaded images, models, each error in OpenAI's shape, and one
task per call whatever the SDK's retries (its defaults: 2 retries of 408, 409, 429, 5xx)."""

from __future__ import annotations

import base64
import io
import zlib
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
    env = {
        "AIGC_IMAGE_MODERATION_TERM_FILES": str(terms),
        "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:refuse_33px_references_and_80px_outputs",
        "AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false",  # Hunyuan's weights are not here: its tasks fail
    }
    with live_server(tmp_path_factory.mktemp("openai"), env=env) as live:
        yield live


def client(server: LiveServer, key: str = f"{SECRET_ID}:{SECRET_KEY}", retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=retries, timeout=120)


def retrying(server: LiveServer) -> openai.OpenAI:
    """The SDK as users have it: its default retries."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=f"{SECRET_ID}:{SECRET_KEY}", timeout=120)


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
         openai.BadRequestError, "JPEG, PNG or WebP"),
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
            retrying(live).images.generate(model="slow", prompt="a lighthouse")
        assert timed_out.value.status_code == 504 and "4-AigcImage-" in timed_out.value.message
        assert live.task_count() == 1  # the SDK does not retry it (x-should-retry: false)
        errors = []
        for _ in range(3):  # quick refusals, within one second: the key's rate limit counts them
            try:
                client(live).images.generate(model="slow", prompt="a lighthouse", size="7x7")
            except openai.APIStatusError as exc:
                errors.append(exc.status_code)
        assert 429 in errors
        assert httpx.get(f"{live.url}/v1/models").status_code == 401


def truncated_png() -> bytes:
    return png((64, 64), (10, 200, 10))[:-40]


def bomb_png() -> bytes:
    """A PNG whose header says 20000×20000 pixels (over fetch.max_pixels), with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (20000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("image", "fragment"),
    [(b"not an image", "not a JPEG, PNG or WebP"), (truncated_png(), "cannot be decoded"), (bomb_png(), "pixels")],
    ids=["text", "truncated", "bomb"],
)
def test_a_bad_upload_is_400_invalid_image_and_makes_no_task(server: LiveServer, image: bytes, fragment: str) -> None:
    before = server.task_count()
    with pytest.raises(openai.BadRequestError) as raised:
        retrying(server).images.edit(model="tiny-random", prompt="x", image=("a.png", image, "image/png"))
    assert raised.value.code == "invalid_image" and raised.value.param == "image"
    assert fragment in raised.value.message
    assert server.task_count() == before


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda c: c.images.edit(model="tiny-random", prompt="x", image=("r.png", png((33, 33), (9, 9, 9))),
                                 size="64x64"), 400, "content_policy_violation"),  # a refused reference
        (lambda c: c.images.generate(model="tiny-random", prompt="x", size="80x80"), 400,
         "content_policy_violation"),  # a refused output image
        (lambda c: c.images.generate(model="Hunyuan", prompt="x"), 500, "model_unavailable"),  # the server's fault
    ],
    ids=["reference-refused", "output-refused", "model-unavailable"],
)  # fmt: skip
def test_a_failed_task_is_answered_by_its_reason_and_the_sdk_makes_it_once(
    server: LiveServer, call: object, status: int, code: str
) -> None:
    before = server.task_count()
    with pytest.raises(openai.APIStatusError) as raised:
        call(retrying(server))  # type: ignore[operator]
    assert raised.value.status_code == status and raised.value.code == code
    assert raised.value.response.headers["x-should-retry"] == "false"
    task_id = raised.value.response.headers["x-aigc-task-id"]
    assert task_id in raised.value.message
    assert server.task_count() == before + 1  # one call, one task, whatever the retries
    assert describe(sdk_client(server), task_id).Status == "FAIL"


def test_a_retry_joins_the_task_of_its_first_attempt(server: LiveServer) -> None:
    """What the SDK sends on a retry (x-stainless-retry-count ≥ 1), or any client within the window,
    finds the first attempt's task; a first attempt is new; Idempotency-Key names a call."""
    body = {"model": "tiny-random", "prompt": "a retried lighthouse", "size": "64x64"}
    headers = {"Authorization": f"Bearer {SECRET_ID}:{SECRET_KEY}"}
    url = f"{server.url}/v1/images/generations"

    def task_of(**extra: str) -> str:
        reply = httpx.post(url, json=body, headers={**headers, **extra}, timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.headers["x-aigc-task-id"]

    first = task_of(**{"x-stainless-retry-count": "0"})
    assert task_of(**{"x-stainless-retry-count": "1"}) == first
    assert task_of() == first  # a client that says nothing, within api.fingerprint_window
    assert task_of(**{"x-stainless-retry-count": "0"}) != first  # the SDK's next call: a new task
    keyed = task_of(**{"Idempotency-Key": "call-1"})
    assert keyed not in (first,) and task_of(**{"Idempotency-Key": "call-1"}) == keyed
    assert task_of(**{"Idempotency-Key": "call-2"}) != keyed


def test_models_by_id_unknown_paths_and_methods_answer_in_openai_shape(server: LiveServer) -> None:
    assert client(server).models.retrieve("tiny-random:1").id == "tiny-random:1"
    assert client(server).models.retrieve("tiny-random").id == "tiny-random:1"  # its default version
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).models.retrieve("dall-e-3")
    assert missing.value.code == "model_not_found"
    headers = {"Authorization": f"Bearer {SECRET_ID}:{SECRET_KEY}"}
    for method, path, status in (("POST", "/v1/chat/completions", 404), ("GET", "/v1/images/generations", 405)):
        reply = httpx.request(method, f"{server.url}{path}", headers=headers)
        assert reply.status_code == status and set(reply.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as bad:
        client(server).images.generate(model="tiny-random", prompt="x", n=99)
    assert bad.value.param == "n"


def test_v1_calls_are_counted_in_the_request_metric(server: LiveServer) -> None:
    def counted(action: str, code: str) -> float:
        text = httpx.get(f"{server.url}/metrics").text
        line = f'aigc_image_requests_total{{action="{action}",code="{code}"}} '
        return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))

    ok, refused = counted("/v1/models", "200"), counted("/v1/models", "401")
    client(server).models.list()
    with pytest.raises(openai.AuthenticationError):
        client(server, f"{SECRET_ID}:wrong").models.list()
    assert counted("/v1/models", "200") == ok + 1 and counted("/v1/models", "401") == refused + 1
