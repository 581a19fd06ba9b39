"""The default model is the deployment's, through real processes: API processes (as on hosts
without GPUs) and workers over one database agree on it, a configured default wins, and a
disagreement stops a process at start instead of failing tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models

from aigc_image.catalog import load_catalog
from aigc_image.hardware import default_for, probe
from tests.helpers import ROOT, LiveServer, create_request, live_server, sdk_client, server_env, wait_for
from tests.postgres_server import PostgresServer
from tests.test_postgres_processes import worker_process

pytestmark = pytest.mark.slow

NONE_CONFIGURED = {"AIGC_IMAGE_MODELS_DEFAULT_MODEL": ""}


def default_model_of(server: LiveServer) -> str:
    """The model a request that names none gets from this API process (its RequestBody says)."""
    client = sdk_client(server)
    request = models.DescribeAigcTaskStatusRequest()
    request.TaskId = client.CreateAigcImageTask(create_request(Prompt="which model?")).TaskId
    body = json.loads(client.DescribeAigcTaskStatus(request).RequestBody)
    return f"{body['ModelName']}:{body['ModelVersion']}"


def aigc_image(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigc_image", *args], capture_output=True, text=True, env=server_env(env), cwd=ROOT,
        timeout=120, check=False,
    )  # fmt: skip


def test_api_processes_without_gpus_use_the_model_the_first_worker_chose(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    env = {"AIGC_IMAGE_DATABASE_URL": postgres.new_database(), "AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false"}
    env |= NONE_CONFIGURED
    data = tmp_path / "shared"
    expected = default_for(load_catalog(), probe())[0].label  # this host's hardware, as its worker sees it
    with ExitStack() as stack:
        apis = [stack.enter_context(live_server(data, "--no-worker", env=env)) for _ in range(2)]
        assert "default model: none yet; the first worker to start chooses one" in apis[0].log.read_text()
        with pytest.raises(TencentCloudSDKException) as refused:  # no worker yet: nothing to guess with
            sdk_client(apis[0]).CreateAigcImageTask(create_request(Prompt="too early"))
        assert refused.value.get_code() == "InvalidParameter.ModelNotSupported"
        assert "no default model yet" in refused.value.get_message()

        stack.enter_context(worker_process(apis[0], env, "worker"))

        def both_use_it() -> bool:
            try:
                return all(default_model_of(api) == expected for api in apis)
            except TencentCloudSDKException:
                return False

        wait_for(both_use_it, timeout=60)  # each API process reads the record every few seconds
        listed = aigc_image("models", "--data-dir", str(data), env=env | {"COLUMNS": "200"})
        assert listed.returncode == 0, listed.stderr
        assert f"* default model: {expected}, chosen by worker " in listed.stdout
        assert f"\n* {expected}  " in listed.stdout  # its line in the listing is marked


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_second_api_process_configured_otherwise_refuses_to_start_until_the_default_is_changed(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    env = {"AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "false"}
    if database == "postgresql":
        env["AIGC_IMAGE_DATABASE_URL"] = request.getfixturevalue("postgres").new_database()
    data = tmp_path / "shared"
    with live_server(data, "--no-worker", env=env) as first:  # configured: tiny-random (server_env)
        assert default_model_of(first) == "tiny-random:1"
        other = env | {"AIGC_IMAGE_MODELS_DEFAULT_MODEL": "SD-Turbo"}
        config = ("--config", str(data / "config.toml"))
        refused = aigc_image("serve", "--no-worker", "--port", "0", "--data-dir", str(data), *config, env=other)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        said = refused.stderr.splitlines()[-1]  # one line, after the log's
        assert said.startswith("aigc-image: configuration error: models.default_model is SD-Turbo:1.0 here, but this "
                               "deployment's default model is tiny-random:1"), refused.stderr  # fmt: skip
        assert "aigc-image models --set-default SD-Turbo:1.0" in said

        changed = aigc_image("models", "--set-default", "SD-Turbo", "--data-dir", str(data), *config, env=env)
        assert changed.returncode == 0, changed.stderr
        assert "default model is now SD-Turbo:1.0 (it was tiny-random:1)" in changed.stdout
        wait_for(lambda: default_model_of(first) == "SD-Turbo:1.0", timeout=30)  # the running process follows
        with live_server(data, "--no-worker", env=other) as second:
            assert default_model_of(second) == "SD-Turbo:1.0"
