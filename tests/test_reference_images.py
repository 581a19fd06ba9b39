"""ImageInfos through the official SDK: the worker fetches each reference safely, and one
reference drives image-to-image. Images come from a loopback server that only
fetch.allow_networks makes reachable."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fetching_server(tmp_path_factory: pytest.TempPathFactory, images: ImageServer) -> Iterator[LiveServer]:
    env = {
        "AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32",
        "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:refuse_33px_references",
    }
    with live_server(tmp_path_factory.mktemp("refs"), env=env) as server:
        yield server


def generate(server: LiveServer, **fields: Any) -> Any:
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(**fields)).TaskId
    return wait_until_finished(client, task_id)[-1]


def pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(download(url))).convert("RGB"), dtype=np.int16)


def test_one_reference_image_drives_image_to_image(fetching_server: LiveServer, images: ImageServer) -> None:
    red, blue = images.add("red.png", (300, 200), (230, 20, 20)), images.add("blue.png", (300, 200), (20, 20, 230))
    seeded = {"AdditionalParameters": json.dumps({"seed": 5, "strength": 0.3})}
    from_red = generate(fetching_server, ImageInfos=[{"ImageUrl": red}], **seeded)
    again = generate(fetching_server, ImageInfos=[{"ImageUrl": red}], **seeded)
    from_blue = generate(fetching_server, ImageInfos=[{"ImageUrl": blue}], Prompt="a lighthouse", **seeded)
    assert from_red.Status == again.Status == from_blue.Status == "DONE", from_red.Message
    assert np.array_equal(pixels(from_red.ImageUrls[0]), pixels(again.ImageUrls[0]))
    assert not np.array_equal(pixels(from_red.ImageUrls[0]), pixels(from_blue.ImageUrls[0]))
    assert images.requests.count("/red.png") == 2  # Prompt is optional with a reference image


def test_a_reference_refused_by_the_classifier_fails_the_task(fetching_server: LiveServer, images: ImageServer) -> None:
    forbidden = images.add("forbidden.png", (33, 33), (0, 0, 0))
    final = generate(fetching_server, ImageInfos=[{"ImageUrl": forbidden}])
    assert final.Status == "FAIL" and "reference image 0 was refused by content review" in final.Message


@pytest.mark.parametrize(("path", "reason"), [("missing.png", "HTTP 404"), ("page.html", "not a JPEG, PNG or WebP")])
def test_a_reference_that_cannot_be_fetched_fails_the_task_saying_why(
    fetching_server: LiveServer, images: ImageServer, path: str, reason: str
) -> None:
    images.images["page.html"] = b"<html>a web page, not an image</html>"
    final = generate(fetching_server, ImageInfos=[{"ImageUrl": f"http://127.0.0.1:{images.port}/{path}"}])
    assert final.Status == "FAIL" and reason in final.Message and "ImageInfos.0" in final.Message


def test_without_allow_networks_a_private_host_fails_without_being_contacted(
    server: LiveServer, images: ImageServer
) -> None:
    url = images.add("private.png", (64, 64), (1, 2, 3)).replace("127.0.0.1", "localhost")
    final = generate(server, ImageInfos=[{"ImageUrl": url}])
    assert final.Status == "FAIL" and "not a public internet address" in final.Message
    assert "/private.png" not in images.requests


@pytest.mark.parametrize(
    ("infos", "code"),
    [
        ([{"ImageUrl": "http://127.0.0.1/a.png"}], "InvalidParameterValue"),  # known up front: a literal address
        ([{"ImageUrl": "http://[::1]/a.png"}], "InvalidParameterValue"),
        ([{"ImageUrl": "file:///etc/passwd"}], "InvalidParameterValue"),
        ([{"ImageUrl": "https://user:pw@example.com/a.png"}], "InvalidParameterValue"),
        ([{"ImageUrl": ""}], "MissingParameter"),
        (
            [{"ImageUrl": "https://example.com/a.png"}, {"ImageUrl": "https://example.com/b.png"}],
            "InvalidParameterValue",
        ),
        ([{"ImageUrl": "https://example.com/a.png", "ReferenceType": "style"}], "UnsupportedOperation"),
    ],
)
def test_bad_image_infos_are_refused_at_create(server: LiveServer, infos: list[dict[str, str]], code: str) -> None:
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ImageInfos=infos))
    assert_error_envelope(refused.value, code)


def test_strength_without_a_reference_is_refused(server: LiveServer) -> None:
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(server).CreateAigcImageTask(
            create_request(Prompt="x", AdditionalParameters=json.dumps({"strength": 0.5}))
        )
    assert "strength" in assert_error_envelope(refused.value, "InvalidParameter")


def test_a_model_without_reference_images_says_so(server: LiveServer) -> None:
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(server).CreateAigcImageTask(
            create_request(Prompt="x", ModelName="Hunyuan", ImageInfos=[{"ImageUrl": "https://example.com/a.png"}])
        )
    assert "reference images" in assert_error_envelope(refused.value, "InvalidParameter.ModelNotSupported")
