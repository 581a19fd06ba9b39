"""What the faces share, in-process: the exception-to-reply mapping, /readyz's public view."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from aigc_image.clock import SystemClock
from aigc_image.config import load_settings
from aigc_image.errors import ContentRefused, TaskError
from aigc_image.protocol.replies import ErrorReplies, Reply
from aigc_image.wiring.api import build_service
from tests.helpers import SECRET_ID, SECRET_KEY


def reply_of(name: str) -> Reply:
    return Reply(PlainTextResponse(name), name)


def test_the_most_specific_handler_answers_and_anything_unclaimed_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies = ErrorReplies(
        {TaskError: lambda exc, rid: reply_of("task"), ContentRefused: lambda exc, rid: reply_of("refused")},
        lambda rid: reply_of("internal"),
    )
    assert replies.reply(ContentRefused("no"), "r1").code == "refused"
    assert replies.reply(TaskError("x"), "r2").code == "task"
    with caplog.at_level(logging.ERROR):
        try:
            {}["missing"]
        except KeyError as exc:
            reply = replies.reply(exc, "r3")
    assert reply.code == "internal" and bytes(reply.response.body) == b"internal"
    [record] = caplog.records
    assert record.exc_info is not None and "r3" in record.getMessage()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    environ = {"AIGC_IMAGE_DATA_DIR": str(tmp_path), "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random"}
    app, store, _ = build_service(load_settings(environ=environ), SystemClock(), {SECRET_ID: SECRET_KEY})
    with TestClient(app) as test_client:  # its client is "testclient": no address, in no network
        yield test_client
    store.close()


def test_readyz_tells_the_public_only_whether_tasks_can_run(client: TestClient) -> None:
    reply = client.get("/readyz")
    assert reply.status_code == 503 and reply.json() == {"ready": False}
    assert client.get("/metrics").status_code == 403  # the same networks decide both


def test_image_urls_take_ascii_digits_only(client: TestClient) -> None:
    key = "4-AigcImage-" + "0" * 32 + "/1-0.png"
    for expires in ("²", "٣٣٣٣٣٣٣٣٣٣"):  # str.isdigit() says yes to both; int() to the second
        assert client.get(f"/results/{key}", params={"Expires": expires, "Signature": "x"}).status_code == 403
