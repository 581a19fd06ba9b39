"""The official Node.js SDK (tencentcloud-sdk-nodejs-mps) against a live server, with its default
signing settings: by IP and port, and by host name and port. It signs the credential scope with the
endpoint's first label as the service and the host without its port (protocol/signing.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.helpers import OTHER_KEY, ROOT, SECRET_ID, SECRET_KEY, LiveServer

pytestmark = pytest.mark.slow

NODE_DIR = ROOT / "tests" / "node"


def node_client(endpoint: str, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> dict[str, Any]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node and tests/node/node_modules are required in CI (scripts/test installs them)")
        pytest.skip("node or the Node.js SDK is not installed here (bash scripts/test installs it when npm exists)")
    command = ["node", str(NODE_DIR / "mps_client.js"), endpoint, secret_id, secret_key]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_nodejs_sdk_works_with_its_default_signing(server: LiveServer, host: str) -> None:
    port = server.host.rsplit(":", 1)[1]
    result = node_client(f"{host}:{port}")
    assert "error" not in result, result
    assert result["status"] == "DONE" and len(result["imageUrls"]) == 1
    assert result["taskStatus"] == "FINISHED" and result["taskId"] in result["listed"]


def test_the_nodejs_sdk_with_a_wrong_key_is_refused(server: LiveServer) -> None:
    result = node_client(server.host, secret_key=OTHER_KEY)
    assert result["error"]["code"] == "AuthFailure.SignatureFailure"
