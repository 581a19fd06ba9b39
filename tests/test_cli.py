"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, server_env

pytestmark = pytest.mark.slow  # each test runs the aigc-image command


def run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aigc_image", *args]
    return subprocess.run(command, capture_output=True, text=True, env=server_env(), cwd=ROOT, timeout=60, check=False)


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "worker", "generate", "models", "keys", "openapi"):
        assert command in result.stdout


def test_openapi_describes_every_action() -> None:
    document = json.loads(run("openapi").stdout)
    assert set(document["paths"]) == {
        "/CreateAigcImageTask", "/DescribeAigcImageTask", "/DescribeAigcTaskStatus", "/DescribeAigcTaskList",
        "/v1/images/generations", "/v1/images/edits", "/v1/models",
    }  # fmt: skip
    assert document["servers"][0]["url"].startswith("http://127.0.0.1:")
    assert set(document["components"]["securitySchemes"]) == {"TC3", "SecretIdAndKey"}
    reply = document["paths"]["/DescribeAigcImageTask"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/ErrorEnvelope"} in reply["schema"]["oneOf"]
    edits = document["paths"]["/v1/images/edits"]["post"]
    assert "multipart/form-data" in edits["requestBody"]["content"] and "429" in edits["responses"]
    create = document["paths"]["/CreateAigcImageTask"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["properties"]["ExtraParameters"]["properties"]["OutputFormat"] == {"type": "string"}


def test_models_shows_the_effective_default_and_what_each_model_needs() -> None:
    result = run("models")  # server_env makes tiny-random the default
    assert result.returncode == 0, result.stderr
    assert "* default model: tiny-random:1, models.default_model" in result.stdout
    assert "tiny-random:1 *" in result.stdout and "built in" in result.stdout
    hunyuan = next(line for line in result.stdout.splitlines() if "Hunyuan:3.0" in line)
    assert "not" in hunyuan and "a GPU" in hunyuan and hunyuan.rstrip(" │").endswith("no")  # wrapped at 80 columns


def test_models_chooses_a_default_for_the_hardware_when_none_is_set() -> None:
    env = {k: v for k, v in server_env().items() if k != "AIGC_IMAGE_MODELS_DEFAULT_MODEL"}
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "default model: SD" in result.stdout and "fits this host (no GPU;" in result.stdout


def test_pull_of_a_model_that_needs_no_download_says_so() -> None:
    result = run("pull", "tiny-random")
    assert result.returncode == 0 and "tiny-random:1 needs no download" in result.stdout
    unknown = run("pull", "Kling")
    assert unknown.returncode == 2 and "Kling" in unknown.stderr and "Traceback" not in unknown.stderr


def test_a_bad_setting_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=server_env({"AIGC_IMAGE_API_PORT": "eighty"}), check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "AIGC_IMAGE_API_PORT" in result.stderr and "Traceback" not in result.stderr


def test_models_shows_the_accelerations_an_operator_turned_on(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[[models]]\nname = "tiny-random"\nversion = "1"\ncompile = true\nchannels_last = true\n')
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=server_env({"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry), "COLUMNS": "200"}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Accelerations" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "tiny-random:1" in line)
    assert "compile, channels_last" in line
    assert "none on" in run("models").stdout
