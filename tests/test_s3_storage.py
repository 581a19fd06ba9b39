"""Images in S3-compatible buckets: the service's own (storage.backend = s3) and the user's
(StoreCosParam), against a real S3-protocol server (moto in server mode) on loopback."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from aigc_image.clock import ManualClock
from aigc_image.config import load_settings
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.store import open_store
from aigc_image.tasks import TaskSpec, new_task_id
from aigc_image.wiring import catalog_from, storage_from
from aigc_image.wiring.worker import WorkerOptions, assemble
from aigc_image.worker.retention import Sweeper
from tests.helpers import (
    LiveServer,
    assert_error_envelope,
    create,
    create_request,
    download,
    get,
    live_server,
    sdk_client,
    wait_until_finished,
)

pytestmark = pytest.mark.slow

KEY_ID, SECRET = "AKIDcos000000000000", "cos-secret"


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )


def new_bucket(endpoint: str) -> str:
    name = f"aigc-{uuid.uuid4().hex[:12]}-1250000000"
    s3(endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str) -> list[str]:
    listing = s3(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_settings(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "AIGC_IMAGE_STORAGE_BACKEND": "s3",
        "AIGC_IMAGE_STORAGE_S3_ENDPOINT": endpoint,
        "AIGC_IMAGE_STORAGE_S3_BUCKET": bucket,
        "AIGC_IMAGE_STORAGE_S3_PREFIX": "aigc/",
        "AIGC_IMAGE_STORAGE_S3_ACCESS_KEY_ID": KEY_ID,
        "AIGC_IMAGE_STORAGE_S3_SECRET_ACCESS_KEY": SECRET,
        "AIGC_IMAGE_STORAGE_S3_ADDRESSING_STYLE": "path",
    }


def cos_settings(endpoint: str) -> dict[str, str]:
    return {
        "AIGC_IMAGE_STORAGE_COS_ENDPOINT": endpoint,  # no {region} in it: every region is this one server
        "AIGC_IMAGE_STORAGE_COS_SECRET_ID": KEY_ID,
        "AIGC_IMAGE_STORAGE_COS_SECRET_KEY": SECRET,
        "AIGC_IMAGE_STORAGE_COS_ADDRESSING_STYLE": "path",
    }


@pytest.fixture(scope="module")
def cos_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[LiveServer]:
    """A live server whose own images go to an S3 bucket and which accepts StoreCosParam."""
    own = new_bucket(s3_endpoint)
    env = s3_settings(s3_endpoint, own) | cos_settings(s3_endpoint)
    with live_server(tmp_path_factory.mktemp("s3"), env=env) as server:
        server.own_bucket = own  # type: ignore[attr-defined]
        yield server


def finish(server: LiveServer, **fields: Any) -> tuple[str, Any]:
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse", **fields)).TaskId
    return task_id, wait_until_finished(client, task_id)[-1]


def test_the_services_own_images_go_to_its_bucket_and_urls_are_presigned(
    cos_server: LiveServer, s3_endpoint: str
) -> None:
    task_id, final = finish(cos_server, OutputImageCount=2)
    assert final.Status == "DONE", final.Message
    bucket = cos_server.own_bucket  # type: ignore[attr-defined]
    assert objects(s3_endpoint, bucket) >= [f"aigc/{task_id}/1-0.png", f"aigc/{task_id}/1-1.png"]
    for url in final.ImageUrls:
        assert url.startswith(f"{s3_endpoint}/{bucket}/aigc/{task_id}/") and "X-Amz-Signature=" in url
        assert "X-Amz-Expires=" in url
        assert Image.open(io.BytesIO(download(url))).size == (64, 64)


def test_store_cos_param_writes_into_the_users_bucket_under_its_path(cos_server: LiveServer, s3_endpoint: str) -> None:
    bucket = new_bucket(s3_endpoint)
    cos = {"CosBucketName": bucket, "CosBucketRegion": "ap-guangzhou", "CosBucketPath": "my/results/"}
    task_id, final = finish(cos_server, StoreCosParam=cos, ExtraParameters={"OutputFormat": "jpeg"})
    assert final.Status == "DONE", final.Message
    assert objects(s3_endpoint, bucket) == [f"my/results/{task_id}/1-0.jpg"]
    [url] = final.ImageUrls
    assert url.startswith(f"{s3_endpoint}/{bucket}/my/results/{task_id}/1-0.jpg?")
    assert Image.open(io.BytesIO(download(url))).format == "JPEG"
    own = cos_server.own_bucket  # type: ignore[attr-defined]
    assert not [key for key in objects(s3_endpoint, own) if task_id in key]  # not also in the service's bucket


def test_a_missing_bucket_fails_the_task_naming_the_bucket(cos_server: LiveServer) -> None:
    cos = {"CosBucketName": "no-such-bucket-1250000000", "CosBucketRegion": "ap-guangzhou"}
    _, final = finish(cos_server, StoreCosParam=cos)
    assert final.Status == "FAIL"
    assert "no-such-bucket-1250000000" in final.Message and "NoSuchBucket" in final.Message


@pytest.mark.parametrize(
    ("cos", "code"),
    [
        ({"CosBucketRegion": "ap-guangzhou"}, "MissingParameter"),
        ({"CosBucketName": "b-1250000000"}, "MissingParameter"),
        ({"CosBucketName": "Bad_Bucket", "CosBucketRegion": "ap-guangzhou"}, "InvalidParameterValue"),
        ({"CosBucketName": "b-1250000000", "CosBucketRegion": "ap/guangzhou"}, "InvalidParameterValue"),
        (
            {"CosBucketName": "b-1250000000", "CosBucketRegion": "ap-guangzhou", "CosBucketPath": "a/../b"},
            "InvalidParameterValue",
        ),
        (
            {"CosBucketName": "b-1250000000", "CosBucketRegion": "ap-guangzhou", "CosBucketPath": "a//b"},
            "InvalidParameterValue",
        ),
        (
            {"CosBucketName": "b-1250000000", "CosBucketRegion": "ap-guangzhou", "CosBucketPath": "a b"},
            "InvalidParameterValue",
        ),
    ],
)
def test_bad_store_cos_params_are_refused_before_anything_is_stored(
    cos_server: LiveServer, cos: dict[str, str], code: str
) -> None:
    with pytest.raises(TencentCloudSDKException) as refused:
        sdk_client(cos_server).CreateAigcImageTask(create_request(Prompt="x", StoreCosParam=cos))
    assert "StoreCosParam" in assert_error_envelope(refused.value, code)


def test_the_sweeper_deletes_the_services_copies_but_never_the_users(tmp_path: Path, s3_endpoint: str) -> None:
    """In-process with a moved clock: after storage.url_ttl the service's own objects go, the
    user's bucket keeps its images."""
    own, users = new_bucket(s3_endpoint), new_bucket(s3_endpoint)
    env = s3_settings(s3_endpoint, own) | cos_settings(s3_endpoint) | {"AIGC_IMAGE_DATA_DIR": str(tmp_path)}
    settings = load_settings(environ=env)
    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path / 'db'}", clock)
    results = storage_from(settings, clock)
    worker = assemble(store, DiffusersEngine("cpu"), catalog_from(settings)[0], results, clock, WorkerOptions(60))
    spec = TaskSpec("tiny-random", "1", "p", "", 1, "png", 64, 64, 2, 6.0, seed=1)
    mine, theirs = new_task_id(), new_task_id()
    create(store, mine, "k", spec)
    create(store, theirs, "k", TaskSpec(**(spec.__dict__ | {"cos_bucket": users, "cos_region": "ap-guangzhou"})))
    assert worker.run_once() and worker.run_once()
    assert objects(s3_endpoint, own) == [f"aigc/{mine}/1-0.png"]
    assert objects(s3_endpoint, users) == [f"{theirs}/1-0.png"]

    clock.advance(settings.storage.url_ttl + 1)
    assert Sweeper(store, results, clock, settings.storage.url_ttl, settings.storage.task_retention).sweep() == 2
    assert objects(s3_endpoint, own) == []
    assert objects(s3_endpoint, users) == [f"{theirs}/1-0.png"]
    assert get(store, theirs).results_purged
    store.close()
