"""Shared test helpers: live servers, official-SDK clients, the one error-envelope check."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models, mps_client

SECRET_ID = "AKIDtestsuite0000000000000000000"
SECRET_KEY = "testsuite-secret-key-000000000000"
OTHER_ID = "AKIDothertenant00000000000000000"
OTHER_KEY = "other-tenant-secret-key-00000000"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LiveServer:
    url: str
    host: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def db_path(self) -> Path:
        return self.data_dir / "aigc-image.db"

    def task_count(self) -> int:
        with sqlite3.connect(self.db_path) as db:
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])


def create(store: Any, task_id: str, secret_id: str, spec: Any) -> str:
    """TaskStore.create from synchronous test code."""
    from aigc_image.tasks import NewTask

    return str(asyncio.run(store.create(NewTask(task_id, secret_id, spec))))


def get(store: Any, task_id: str) -> Any:
    """TaskStore.get from synchronous test code."""
    return asyncio.run(store.get(task_id))


def in_process_service(data_dir: Path) -> tuple[Any, Any]:
    """The real app and store over SQLite in ``data_dir``, limits off, for fuzzing in-process."""
    from aigc_image.clock import SystemClock
    from aigc_image.config import load_settings
    from aigc_image.wiring.api import build_service

    environ = {
        "AIGC_IMAGE_DATA_DIR": str(data_dir),
        "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
        "AIGC_IMAGE_API_RATE_LIMIT": "0",
        "AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "0",
    }
    app, store, _ = build_service(load_settings(environ=environ), SystemClock(), {SECRET_ID: SECRET_KEY})
    return app, store


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGC_IMAGE_")}
    env.update(
        {
            "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
            "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
            "AIGC_IMAGE_WORKER_POLL_INTERVAL": "1",
            # Tests poll quickly; tests of the limit itself set their own (test_api_errors.py).
            "AIGC_IMAGE_API_RATE_LIMIT": "1000",
            "AIGC_IMAGE_API_RATE_BURST": "1000",
            "AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "0",
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@contextmanager
def live_server(data_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> Iterator[LiveServer]:
    """Run ``aigc-image serve --port 0`` as a real subprocess until the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "config.toml"
    if not config.exists():
        config.write_text(
            f'[[keys]]\nsecret_id = "{SECRET_ID}"\nsecret_key = "{SECRET_KEY}"\n\n'
            f'[[keys]]\nsecret_id = "{OTHER_ID}"\nsecret_key = "{OTHER_KEY}"\n'
        )
    log = data_dir / "server.log"
    command = [sys.executable, "-m", "aigc_image", "serve", "--port", "0", "--data-dir", str(data_dir)]
    command += ["--config", str(config), *args]
    with log.open("ab") as out:  # logging (stderr) goes straight to the log file
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=out, env=server_env(env), cwd=ROOT
        )  # fmt: skip
    try:
        url = _wait_for_url(process, log)
        yield LiveServer(url, url.removeprefix("http://"), data_dir, process, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    """Wait, on an event, for the URL that ``serve`` prints once its socket is listening.

    A thread copies the server's stdout (key lines, the URL) into the log and sets the event
    when the URL appears or the output ends.
    """
    found: list[str] = []
    printed = threading.Event()

    def copy_stdout() -> None:
        assert process.stdout is not None
        with process.stdout, log.open("ab") as out:  # closed here, at the end of the server's output
            for line in process.stdout:
                out.write(line)
                out.flush()
                match = re.search(rb"listening on (http://\S+)", line)
                if match and not found:
                    found.append(match.group(1).decode())
                    printed.set()
        printed.set()  # the output ended: the server exited

    threading.Thread(target=copy_stdout, daemon=True).start()
    if not printed.wait(60) or not found:
        raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")
    url = found[0]
    # The socket is bound and listening before the URL is printed: this waits in the backlog.
    if httpx.get(f"{url}/healthz", timeout=60).status_code != 200:
        raise RuntimeError(f"server is not healthy:\n{log.read_text(errors='replace')}")
    return url


def sdk_client(
    server: LiveServer,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    *,
    method: str = "POST",
    sign_method: str | None = None,
    token: str | None = None,
) -> mps_client.MpsClient:
    """The official SDK pointed at the live server, exactly as the docs tell users to."""
    return sdk_client_at(server.host, secret_id, secret_key, method=method, sign_method=sign_method, token=token)


def sdk_client_at(
    endpoint: str,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    *,
    method: str = "POST",
    sign_method: str | None = None,
    token: str | None = None,
) -> mps_client.MpsClient:
    """The official SDK pointed at ``endpoint`` (``host:port``; plain http)."""
    http = HttpProfile(protocol="http", endpoint=endpoint, reqMethod=method)
    profile = ClientProfile(httpProfile=http, signMethod=sign_method)
    return mps_client.MpsClient(credential.Credential(secret_id, secret_key, token), "ap-guangzhou", profile)


def create_request(**fields: Any) -> models.CreateAigcImageTaskRequest:
    request = models.CreateAigcImageTaskRequest()
    request.from_json_string(json.dumps(fields))
    return request


def describe(client: mps_client.MpsClient, task_id: str) -> models.DescribeAigcImageTaskResponse:
    request = models.DescribeAigcImageTaskRequest()
    request.TaskId = task_id
    return client.DescribeAigcImageTask(request)


def wait_until_finished(client: mps_client.MpsClient, task_id: str, timeout: float = 120.0) -> list[Any]:
    """Poll DescribeAigcImageTask; returns the distinct replies seen, the final one last."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = describe(client, task_id)
        if not seen or seen[-1].Status != reply.Status:
            seen.append(reply)
        if reply.Status in ("DONE", "FAIL"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s; saw {[r.Status for r in seen]}")


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Until ``condition()`` holds, for state another process owns (its rows, its log, /proc),
    which no event of ours reports; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read()  # type: ignore[no-any-return]


def assert_error_envelope(reply: httpx.Response | TencentCloudSDKException, code: str) -> str:
    """The one check of an error reply: envelope shape, exact Code, a message, a RequestId."""
    if isinstance(reply, TencentCloudSDKException):
        assert reply.get_code() == code, f"expected {code}, got {reply.get_code()}: {reply.get_message()}"
        assert reply.get_message()
        assert UUID.fullmatch(reply.get_request_id() or ""), reply.get_request_id()
        return str(reply.get_message())
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert "Traceback" not in reply.text
    body = reply.json()
    assert set(body) == {"Response"}
    response = body["Response"]
    assert set(response) == {"Error", "RequestId"}, response
    assert UUID.fullmatch(response["RequestId"])
    assert response["Error"]["Code"] == code, response["Error"]
    assert isinstance(response["Error"]["Message"], str) and response["Error"]["Message"]
    return str(response["Error"]["Message"])
