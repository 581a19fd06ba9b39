"""The command line as a user meets it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from aigc_image.catalog import load_catalog
from aigc_image.hardware import default_for, probe
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
    assert "* tiny-random:1  fits, needs 0.1 GB RAM · built in" in result.stdout
    hunyuan = next(line for line in result.stdout.splitlines() if "Hunyuan:3.0" in line)
    assert "GPU only" in hunyuan and "not cached" in hunyuan
    assert all(len(line) <= 80 for line in result.stdout.splitlines())  # piped: 80 columns, nothing cut
    qwen = re.split(r"\n[ *] \S", result.stdout.split("  Qwen:2.1-int8 ", 1)[1])[0]  # its lines, to the next model
    assert "int8" in qwen and "up to 10 references" in qwen and "samplers: Euler, Euler a, UniPC" in qwen


def test_models_chooses_a_default_for_the_hardware_when_none_is_set() -> None:
    env = {k: v for k, v in server_env().items() if k != "AIGC_IMAGE_MODELS_DEFAULT_MODEL"}
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    chosen, _ = default_for(load_catalog(), probe())
    assert f"* default model: {chosen.label}, the best built-in model that fits this host (no GPU;" in " ".join(
        result.stdout.split()
    )


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


def test_models_shows_adapters_and_accelerations_an_operator_turned_on(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[[models]]\nname = "tiny-random"\nversion = "1"\ncompile = true\nchannels_last = true\n'
        '[[models]]\nname = "Ink"\nversion = "1"\nengine = "diffusers"\nsource = "/srv/sdxl"\n'
        'pipeline = "StableDiffusionXLPipeline"\nadapters = { ink = "/srv/ink.safetensors", paper = "/srv/p" }\n'
        "loras = { ink = 0.8 }\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=server_env({"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry)}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "    accelerations: compile, channels_last" in result.stdout
    assert "    adapters: ink (on, 0.8), paper" in result.stdout
    assert "accelerations" not in run("models").stdout
