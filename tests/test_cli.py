"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, server_env


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
    }  # fmt: skip
    create = document["paths"]["/CreateAigcImageTask"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["properties"]["ExtraParameters"]["properties"]["OutputFormat"] == {"type": "string"}


def test_models_shows_the_effective_default() -> None:
    result = run("models")  # server_env makes tiny-random the default
    assert result.returncode == 0 and result.stdout.startswith("default model: tiny-random")


def test_a_bad_setting_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=server_env({"AIGC_IMAGE_API_PORT": "eighty"}), check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "AIGC_IMAGE_API_PORT" in result.stderr and "Traceback" not in result.stderr
