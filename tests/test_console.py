"""The web console in a real headless Chromium against a live server (tests/node/console_check.mjs:
one run, whose findings several tests read), and its signing code against the server's.
Screenshots go to test-artifacts/console/."""

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
    found = console_findings(tmp_path)
    assert found["crypto"] == "webcrypto" and found["plainCrypto"] == "fallback"
    assert "AuthFailure.SignatureFailure" in found["wrongKey"]
    assert not found["keyInStorage"], "the key is kept only when the person asks"
    assert "Seed42" in found["detail"].replace(" ", "") and "tiny-random:1" in found["detail"]
    assert '"ContentProducer"' in found["label"] or "ContentProducer" in found["label"]
    assert found["download"].endswith(".png") and found["downloadStatus"] == 200
    assert found["rerunShown"] and found["rerunTask"] != found["firstTask"] and found["rerunSamePixels"]
    assert {found["firstTask"], found["rerunTask"]} <= set(found["galleryCards"])
    assert "tiny-random:1" in found["operator"]
    assert found["plainTask"].startswith("4-AigcImage-")
    assert found["pageErrors"] == []
    for shot in ("signin-refused", "task", "gallery", "operator"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 1000


def test_the_console_passes_axe_fits_a_phone_and_works_by_keyboard(tmp_path: Path) -> None:
    """Every page at 1280 and 390 px: no serious or critical axe-core finding, nothing wider than the window."""
    found = console_findings(tmp_path)
    assert set(found["axe"]) == {f"{page}@{width}" for page in PAGES for width in (1280, 390)}
    assert {page: problems for page, problems in found["axe"].items() if problems} == {}
    assert {page: extra for page, extra in found["overflow"].items() if extra > 0} == {}
    assert found["cardsTabbable"] and found["keyboard"]["focusedAfterEscape"] == found["keyboard"]["opened"]


def test_the_gallery_follows_running_tasks_and_says_why_one_failed(tmp_path: Path) -> None:
    found = console_findings(tmp_path)
    assert found["slowCardFirst"] in ("PENDING", "RUNNING") and found["slowCardNoBrokenImage"]
    assert found["slowCardLast"] == "FINISHED"  # without a reload
    assert "weights" in found["failedReason"] and not found["failedRerunShown"]
    assert found["failedCardReason"] and found["failedCardReason"] in found["failedMessage"]
    page = found["operatorPage"]
    assert page.count(found["failedMessage"]) == 1, "one failure is told once on the operator page"


def test_waiting_tasks_show_their_place_and_tasks_are_cancelled_and_deleted_in_chromium(tmp_path: Path) -> None:
    """A long task runs, two wait behind it; each is cancelled or deleted from the console, and the
    server's refusals (a cancel of a task that had finished, a delete of one deleted meanwhile) shown."""
    found = console_findings(tmp_path)
    long, next_ = found["queueTasks"]["long"], found["queueTasks"]["next"]
    assert found["running"] == {"deleteShown": False, "rerunShown": False}  # Cancel only: waited for above
    assert found["waiting"] == {"message": "waiting for a worker · 1 task ahead", "progressShown": False,
                                "cancelShown": True}  # fmt: skip
    assert found["galleryPositions"] == ["next in line", "1 task ahead"]

    cancelled = "The task was cancelled by its owner (CancelAigcImageTask) before it finished."
    assert found["cancelledWaiting"] == {"failure": f"Why it failed: {cancelled}", "focus": "delete-task",
                                         "cancelShown": False, "deleteShown": True}  # fmt: skip
    assert found["galleryCancel"] == {"notice": f"Task {long} cancelled.", "why": cancelled, "button": "Delete"}
    refused = found["cancelRefused"]  # the running task cancelled, the next one ran and finished
    assert refused["error"] == f"Refused: FailedOperation.TaskFinished: Task {next_} has already finished (DONE); " \
        "nothing to cancel."  # fmt: skip
    assert refused["status"] == "FINISHED" and refused["deleteShown"]

    assert found["confirm"] == {"focus": "Keep it", "afterEscape": {"hash": f"#/task/{next_}", "focus": "delete-task"},
                                "tabbedTo": "Delete"}  # fmt: skip
    assert found["deleted"]["notice"] == f"Task {next_} deleted."
    assert found["deleted"]["reopened"].startswith("ResourceNotFound.TaskNotFound:")
    assert found["galleryDelete"]["notice"] == f"Task {long} deleted."
    assert found["galleryDelete"]["focus"].startswith("4-AigcImage-") and found["galleryDelete"]["focus"] != long
    assert found["deleteRefused"] == {
        "error": f"Refused: ResourceNotFound.TaskNotFound: Task {long} does not exist.",
        "hash": f"#/task/{long}",
    }


def test_the_console_offers_what_the_model_takes_in_local_time_with_labels_read_back(tmp_path: Path) -> None:
    found = console_findings(tmp_path)
    models = {model["label"]: model for model in found["models"]["models"]}
    assert found["models"]["default"] == "tiny-random:1"
    assert found["offered"] == models["tiny-random:1"]["aspect_ratios"]  # the default model's, nothing it refuses
    assert found["offeredResolutions"] == models["tiny-random:1"]["resolutions"]
    assert "4:5" not in found["offered"] and "source" not in models["SD-Turbo:1.0"]
    assert found["created"].endswith("GMT+9"), found["created"]  # Tokyo's local time, named
    assert found["jpegLabelSource"].startswith("Read from the JPEG's XMP packet")
    assert json.loads(found["jpegLabel"])["ContentProducer"] and "<x:xmpmeta" not in found["jpegLabel"]
    assert found["favicon"] == "favicon.ico"


PAGES = ("signin", "gallery", "create", "task", "task-failed", "task-running", "task-waiting", "task-cancelled",
         "task-confirm", "operator")  # fmt: skip
_FINDINGS: dict[str, Any] = {}


def console_findings(tmp_path: Path) -> dict[str, Any]:
    """One run of console_check.mjs against a live server, shared by the tests that read its findings."""
    if not _FINDINGS:
        require("chromium", Path(CHROMIUM).exists())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with live_server(tmp_path / "data") as server:
            _FINDINGS.update(node("console_check.mjs", server.url, SECRET_ID, SECRET_KEY, str(ARTIFACTS)))
    assert "error" not in _FINDINGS, _FINDINGS.get("error")
    return _FINDINGS


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


def test_the_favicon_and_the_models_the_form_offers_are_served(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        icons = [httpx.get(f"{server.url}{path}") for path in ("/favicon.ico", "/console/favicon.ico")]
        models = httpx.get(f"{server.url}/console/models.json")
    for icon in icons:
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
        assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    listed = models.json()
    assert listed["default"] == "tiny-random:1"
    tiny = next(model for model in listed["models"] if model["label"] == "tiny-random:1")
    assert tiny["name"] == "tiny-random" and "16:9" in tiny["aspect_ratios"]
    assert all("source" not in model for model in listed["models"]), "no weights locations"
