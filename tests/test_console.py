"""The web console in a real headless Chromium against a live server (tests/node/console_check.mjs),
and its signing code against the server's. Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, SECRET_ID, SECRET_KEY, live_server

pytestmark = pytest.mark.slow

NODE_DIR = ROOT / "tests" / "node"
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def require(what: str, present: bool) -> None:
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI (.ci/run installs it)")
        pytest.skip(f"{what} is not installed here")


def node(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    require(
        "node with tests/node/node_modules", shutil.which("node") is not None and (NODE_DIR / "node_modules").is_dir()
    )
    done = subprocess.run(["node", str(NODE_DIR / script), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_person_signs_in_submits_watches_opens_reruns_and_browses_in_chromium(tmp_path: Path) -> None:
    require("chromium", Path(CHROMIUM).exists())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(tmp_path / "data") as server:
        found = node("console_check.mjs", server.url, SECRET_ID, SECRET_KEY, str(ARTIFACTS))
    assert "error" not in found, found.get("error")
    assert found["crypto"] == "webcrypto" and found["plainCrypto"] == "fallback"
    assert "AuthFailure.SignatureFailure" in found["wrongKey"]
    assert not found["keyInStorage"], "the key is kept only when the person asks"
    assert "Seed42" in found["detail"].replace(" ", "") and "tiny-random:1" in found["detail"]
    assert '"ContentProducer"' in found["label"] or "ContentProducer" in found["label"]
    assert found["download"].endswith(".png") and found["downloadStatus"] == 200
    assert found["rerunTask"] != found["firstTask"] and found["rerunSamePixels"]
    assert {found["firstTask"], found["rerunTask"]} <= set(found["galleryCards"])
    assert "tiny-random:1" in found["operator"]
    assert found["plainTask"].startswith("4-AigcImage-")
    assert found["pageErrors"] == []
    for shot in ("signin-refused", "task", "gallery", "operator"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 1000


def test_the_browser_signature_is_the_one_the_server_computes() -> None:
    found = node("tc3_check.mjs", SECRET_ID, SECRET_KEY)
    assert found["sha256Mismatches"] == []
    from aigc_image.protocol.signing import sha256_hex, sign_tc3_headers

    body = found["body"].encode()
    expected = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="DescribeAigcTaskList", body=body,
        host="console.test:8000", timestamp=found["timestamp"], content_type="application/json; charset=utf-8",
    )  # fmt: skip
    assert found["headers"]["Authorization"] == expected["Authorization"]
    assert sha256_hex(body) == found["bodyHash"]


def test_the_console_is_served_with_a_strict_content_security_policy(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        redirect = httpx.get(f"{server.url}/console")
        page = httpx.get(f"{server.url}/console/")
        script = httpx.get(f"{server.url}/console/tc3.js")
        missing = httpx.get(f"{server.url}/console/../aigc-image.db")
    assert redirect.status_code == 308 and redirect.headers["location"] == "console/"
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"] or "'unsafe-inline'" not in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404
