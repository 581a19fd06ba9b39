"""AUTOMATIC1111's web UI API (/sdapi/v1), driven by the ``webuiapi`` package (the client many A1111
tools use) against a live server: txt2img, img2img, models, options, samplers, progress, Basic
auth, and every refusal as FastAPI gives it. Each generation is an ordinary task under the key."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.helpers import OTHER_ID, SECRET_ID, SECRET_KEY, LiveServer, describe, live_server, sdk_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("webui")) as live:
        yield live


def api(server: LiveServer, secret_key: str = SECRET_KEY) -> webuiapi.WebUIApi:
    host, port = server.host.rsplit(":", 1)
    # webuiapi's own default sampler, "Euler a", is one tiny-random offers.
    return webuiapi.WebUIApi(host=host, port=int(port), username=SECRET_ID, password=secret_key)


def test_txt2img_makes_an_ordinary_task_with_a1111s_reply(server: LiveServer) -> None:
    before = server.task_count()
    result = api(server).txt2img(prompt="a lighthouse", width=64, height=48, steps=4, seed=1234, batch_size=2, n_iter=2)
    assert [image.size for image in result.images] == [(64, 48)] * 4  # batch_size × n_iter
    assert all("AIGC" in image.info for image in result.images)  # labelled like every task's images
    info = result.info
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235, 1236, 1237] and info["steps"] == 4
    assert result.parameters["prompt"] == "a lighthouse"
    assert server.task_count() == before + 1
    assert describe(sdk_client(server), info["task_id"]).Status == "DONE"  # the same task through MPS


def test_the_same_seed_gives_the_same_pixels_and_minus_one_a_random_seed(server: LiveServer) -> None:
    client = api(server)
    first, second = (client.txt2img(prompt="a harbour", width=64, height=64, steps=3, seed=7) for _ in range(2))
    assert first.image.tobytes() == second.image.tobytes()
    drawn = client.txt2img(prompt="a harbour", width=64, height=64, steps=3, seed=-1).info["seed"]
    assert 0 <= drawn < 2**32


def test_img2img_takes_init_images(server: LiveServer) -> None:
    red = Image.new("RGB", (64, 64), (230, 20, 20))
    result = api(server).img2img(images=[red], prompt="a red lighthouse", width=64, height=64, steps=4,
                                 denoising_strength=0.5)  # fmt: skip
    assert result.image.size == (64, 64) and result.info["denoising_strength"] == 0.5


def test_models_options_samplers_and_progress(server: LiveServer) -> None:
    client = api(server)
    titles = client.util_get_model_names()
    assert "tiny-random:1" in titles and "SD-Turbo:1.0" in titles
    assert client.util_get_current_model() == "tiny-random:1"
    client.util_set_model("SD-Turbo:1.0", find_closest=False)
    assert client.util_get_current_model() == "SD-Turbo:1.0"  # for this key only
    assert api(server).get_options()["sd_model_checkpoint"] == "SD-Turbo:1.0"
    other = httpx.get(f"{server.url}/sdapi/v1/options", auth=(OTHER_ID, "x"))
    assert other.status_code == 401
    client.util_set_model("tiny-random:1", find_closest=False)
    names = [sampler["name"] for sampler in client.get_samplers()]
    assert names[:3] == ["Euler", "Euler a", "Heun"] and "DPM++ 2M Karras" in names
    progress = client.get_progress()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"prompt": "x", "sampler_name": "Restart"}, 422, "sampler"),
        ({"prompt": "x", "enable_hr": True}, 422, "enable_hr"),
        ({"prompt": "x", "restore_faces": True}, 422, "restore_faces"),
        ({"prompt": "x", "clip_skip": 2}, 422, "clip_skip"),
        ({"prompt": "x", "override_settings": {"CLIP_stop_at_last_layers": 2}}, 422, "override_settings"),
        ({"prompt": "x", "seed": -2}, 422, "seed"),
        ({"prompt": "x", "steps": "many"}, 422, "steps"),
        ({"prompt": "x", "width": 7, "height": 7}, 422, "size"),
        ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "dall-e"}}, 404, "Model not found"),
        ({"prompt": "x", "batch_size": 3, "n_iter": 2}, 422, '"batch_size"'),
        ({"prompt": "nul \u0000"}, 422, "NUL"),
        ({"prompt": "x", "init_images": ["aGVsbG8="]}, 422, "init_images"),  # img2img's, in txt2img
    ],
)
def test_refusals_are_fastapi_shaped_and_make_no_task(
    server: LiveServer, payload: dict[str, object], status: int, fragment: str
) -> None:
    before = server.task_count()
    reply = httpx.post(f"{server.url}/sdapi/v1/txt2img", json=payload, auth=(SECRET_ID, SECRET_KEY), timeout=60)
    assert reply.status_code == status, reply.text
    assert fragment in reply.text and "Traceback" not in reply.text
    if status == 422:
        [item] = reply.json()["detail"]
        assert item["loc"][0] == "body" and item["msg"]
    assert server.task_count() == before


def test_a_bad_init_image_is_refused_before_any_task(server: LiveServer) -> None:
    before = server.task_count()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    truncated = buffer.getvalue()[:-40]
    for image in ("not base64!", base64.b64encode(b"not an image").decode(), base64.b64encode(truncated).decode()):
        reply = httpx.post(f"{server.url}/sdapi/v1/img2img", json={"prompt": "x", "init_images": [image]},
                           auth=(SECRET_ID, SECRET_KEY), timeout=60)  # fmt: skip
        assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "init_images"], reply.text
    assert server.task_count() == before


def test_basic_auth_is_required_and_unknown_paths_are_json(server: LiveServer) -> None:
    with pytest.raises(RuntimeError) as refused:
        api(server, "wrong").txt2img(prompt="x", width=64, height=64)
    assert refused.value.args[0] == 401
    reply = httpx.get(f"{server.url}/sdapi/v1/sd-models")
    assert reply.status_code == 401 and reply.headers["www-authenticate"].startswith("Basic")
    unknown = httpx.get(f"{server.url}/sdapi/v1/loras", auth=(SECRET_ID, SECRET_KEY))
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    wrong_method = httpx.get(f"{server.url}/sdapi/v1/txt2img", auth=(SECRET_ID, SECRET_KEY))
    assert wrong_method.status_code == 405


def test_a_failed_task_is_a_5xx_or_a_4xx_by_its_reason(tmp_path: Path) -> None:
    """Hunyuan's weights are not here (and may not be downloaded): its task fails, the server's
    fault (500); a refused output image is the request's (422)."""
    env = {"AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false",
           "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:refuse_33px_references_and_80px_outputs"}  # fmt: skip
    with live_server(tmp_path / "data", env=env) as live:
        auth = (SECRET_ID, SECRET_KEY)
        failed = httpx.post(f"{live.url}/sdapi/v1/txt2img", auth=auth, timeout=120,
                            json={"prompt": "x", "override_settings": {"sd_model_checkpoint": "Hunyuan"}})  # fmt: skip
        assert failed.status_code == 500 and "model_unavailable" in failed.json()["detail"]
        refused = httpx.post(f"{live.url}/sdapi/v1/txt2img", auth=auth, timeout=120,
                             json={"prompt": "x", "width": 80, "height": 80})  # fmt: skip
        assert refused.status_code == 422 and "content_refused" in refused.text
        assert live.task_count() == 2
