"""The real clients against a live `aigc-image serve`: official SDK (every wire mode), tccli, generate."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import (
    ROOT,
    SECRET_ID,
    SECRET_KEY,
    LiveServer,
    create_request,
    download,
    live_server,
    sdk_client,
    server_env,
    wait_for,
    wait_until_finished,
)

pytestmark = pytest.mark.slow


def test_sdk_create_poll_download(server: LiveServer) -> None:
    client = sdk_client(server)
    reply = client.CreateAigcImageTask(create_request(Prompt="a lighthouse at dusk", Operator="admin"))
    assert reply.TaskId.startswith("4-AigcImage-") and len(reply.TaskId) == len("4-AigcImage-") + 32
    seen = wait_until_finished(client, reply.TaskId)
    statuses = [r.Status for r in seen]
    assert statuses[-1] == "DONE" and set(statuses) <= {"WAIT", "RUN", "DONE"}
    done = seen[-1]
    assert done.Message == "ok" and len(done.ImageUrls) == 1
    assert done.ImageUrls[0].startswith(server.url + "/results/")
    image = Image.open(io.BytesIO(download(done.ImageUrls[0])))
    assert (image.format, image.size) == ("PNG", (64, 64))  # tiny-random's native size


def test_statuses_move_from_wait_through_run_to_done(server: LiveServer) -> None:
    """Queue several tasks so the later ones are observably WAIT, then RUN, then DONE."""
    client = sdk_client(server)
    ids = [client.CreateAigcImageTask(create_request(Prompt=f"p{i}")).TaskId for i in range(4)]
    sequences = {task_id: [r.Status for r in wait_until_finished(client, task_id)] for task_id in reversed(ids)}
    order = ["WAIT", "RUN", "DONE"]
    for sequence in sequences.values():
        assert sequence[-1] == "DONE"
        assert sequence == sorted(sequence, key=order.index)  # never moves backwards
    assert sequences[ids[-1]][0] == "WAIT"  # three tasks were ahead of it
    assert any("RUN" in sequence for sequence in sequences.values())


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG")])
def test_output_count_and_format(server: LiveServer, count: int, output_format: str, pil_format: str) -> None:
    client = sdk_client(server)
    request = create_request(
        Prompt="a red fox", NegativePrompt="blurry", OutputImageCount=count,
        ExtraParameters={"OutputFormat": output_format}, ModelName="tiny-random", ModelVersion="1",
    )  # fmt: skip
    done = wait_until_finished(client, client.CreateAigcImageTask(request).TaskId)[-1]
    assert done.Status == "DONE" and len(done.ImageUrls) == count
    for url in done.ImageUrls:
        image = Image.open(io.BytesIO(download(url)))
        assert (image.format, image.size) == (pil_format, (64, 64))


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("sign_method", ["TC3-HMAC-SHA256", "HmacSHA1", "HmacSHA256"])
def test_every_sdk_wire_mode(server: LiveServer, method: str, sign_method: str) -> None:
    """TC3 and v1 signatures, JSON, form and query parameters (flattened, True/False booleans)."""
    client = sdk_client(server, method=method, sign_method=sign_method)
    request = create_request(
        Prompt="a cat 猫 & a dog = friends?", EnhancePrompt=False, OutputImageCount=2,
        ExtraParameters={"OutputFormat": "jpeg", "LogoAdd": 0},
    )  # fmt: skip
    done = wait_until_finished(client, client.CreateAigcImageTask(request).TaskId)[-1]
    assert done.Status == "DONE" and len(done.ImageUrls) == 2
    assert Image.open(io.BytesIO(download(done.ImageUrls[1]))).format == "JPEG"


def test_a_task_is_private_to_the_key_that_created_it(server: LiveServer) -> None:
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    from tests.helpers import OTHER_ID, OTHER_KEY, assert_error_envelope, describe

    task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="mine")).TaskId
    with pytest.raises(TencentCloudSDKException) as caught:
        describe(sdk_client(server, OTHER_ID, OTHER_KEY), task_id)
    assert_error_envelope(caught.value, "ResourceNotFound.TaskNotFound")


def _tccli(server: LiveServer, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tccli = Path(sys.executable).with_name("tccli")
    command = [str(tccli), "mps", *args, "--secretId", SECRET_ID, "--secretKey", SECRET_KEY,
               "--region", "ap-guangzhou", "--endpoint", server.url]  # fmt: skip
    env = {**server_env(), "HOME": str(home)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_tccli_create_and_describe(server: LiveServer, tmp_path: Path) -> None:
    request_file = tmp_path / "req.json"
    request_file.write_text(json.dumps({"Prompt": "draw a cat", "OutputImageCount": 1, "ModelName": "tiny-random"}))
    created = _tccli(server, tmp_path, "CreateAigcImageTask", "--cli-input-json", f"file://{request_file}")
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["TaskId"]
    for _ in range(600):
        described = _tccli(server, tmp_path, "DescribeAigcImageTask", "--TaskId", task_id)
        assert described.returncode == 0, described.stderr
        reply = json.loads(described.stdout)
        if reply["Status"] in ("DONE", "FAIL"):
            break
    assert reply["Status"] == "DONE", reply
    assert Image.open(io.BytesIO(download(reply["ImageUrls"][0]))).size == (64, 64)


def test_tccli_reports_api_errors(server: LiveServer, tmp_path: Path) -> None:
    result = _tccli(server, tmp_path, "DescribeAigcImageTask", "--TaskId", "4-AigcImage-" + "0" * 32)
    assert result.returncode == 255
    assert "code:ResourceNotFound.TaskNotFound" in result.stderr


def read_image(path: Path) -> Image.Image:
    """The image in ``path``, loaded (and the file closed)."""
    with Image.open(path) as image:
        image.load()
        return image


def test_generate_command_writes_the_image(server: LiveServer, tmp_path: Path) -> None:
    output = tmp_path / "out.jpg"
    env = {**server_env(), "AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "generate", "a lighthouse at dusk", "-o", str(output),
         "--endpoint", server.url, "--count", "2"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Image.open(output) as first, Image.open(tmp_path / "out-1.jpg") as second:
        assert first.format == "JPEG" and second.size == (64, 64)


def test_generate_command_passes_sizes_seeds_and_the_logo(server: LiveServer, tmp_path: Path) -> None:
    env = {**server_env(), "AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY}
    outputs = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for output, extra in zip(outputs, (["--logo"], [], ["--panorama"]), strict=True):
        options = ["--aspect-ratio", "16:9", "--resolution", "720P"] if "--panorama" not in extra else []
        result = subprocess.run(
            [sys.executable, "-m", "aigc_image", "generate", "a fox", "-o", str(output), "--endpoint", server.url,
             "--seed", "4", *options, *extra],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    labelled, plain, panorama = (read_image(path) for path in outputs)
    assert labelled.size == plain.size == (1280, 720) and panorama.size == (96, 48)
    assert labelled.tobytes() != plain.tobytes()  # the mark; the seed made everything else equal
    assert labelled.crop((0, 0, 600, 300)).tobytes() == plain.crop((0, 0, 600, 300)).tobytes()


def test_generate_command_reports_errors(server: LiveServer, tmp_path: Path) -> None:
    env = {**server_env(), "AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": "wrong"}
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "generate", "x", "-o", str(tmp_path / "o.png"), "--endpoint", server.url],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "AuthFailure.SignatureFailure" in result.stderr
    assert result.stderr.startswith("aigc-image: ")  # no blank line first
    assert not (tmp_path / "o.png").exists()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigc_image", *args], capture_output=True, text=True, env=env or server_env(),
        cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def test_generate_shows_step_progress_with_an_eta(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[[models]]\nname = "slow"\nversion = "1"\ndefault = true\nengine = "tiny-random"\n'
                        "steps = 500\nmax_steps = 999\nwidth = 64\nheight = 64\n")  # fmt: skip
    with live_server(tmp_path / "data", env={"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry)}) as live:
        env = server_env({"AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY,
                          "FORCE_COLOR": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160"})  # fmt: skip
        result = _cli("generate", "a fox", "--model", "slow", "-o", str(tmp_path / "fox.png"), "--endpoint", live.url,
                      env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)  # the terminal's colours and cursor moves
    steps = [int(done) for done in re.findall(r"generating .*? (\d+)/500 steps", drawn)]
    assert steps and max(steps) > 0 and steps == sorted(steps), drawn[-2000:]
    assert "ETA" in drawn


def test_generate_takes_the_endpoint_from_the_settings_and_makes_folders(server: LiveServer, tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    port = server.host.rsplit(":", 1)[1]
    config.write_text(f'[api]\nport = {port}\n\n[[keys]]\nsecret_id = "{SECRET_ID}"\nsecret_key = "{SECRET_KEY}"\n')
    output = tmp_path / "new" / "folder" / "fox.png"
    result = _cli("generate", "a fox", "-o", str(output), "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    with Image.open(output) as image:
        assert image.format == "PNG"


def test_generate_refuses_a_file_name_it_cannot_write_before_making_a_task(server: LiveServer, tmp_path: Path) -> None:
    before = server.task_count()
    env = {**server_env(), "AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY}
    result = _cli("generate", "a fox", "-o", str(tmp_path / "fox.gif"), "--endpoint", server.url, env=env)
    assert result.returncode == 2 and result.stderr.startswith("aigc-image: cannot write 'fox.gif'")
    assert server.task_count() == before


def test_tasks_lists_the_keys_recent_tasks_and_keys_says_when_there_are_none(
    server: LiveServer, tmp_path: Path
) -> None:
    env = {**server_env(), "AIGC_IMAGE_SECRET_ID": SECRET_ID, "AIGC_IMAGE_SECRET_KEY": SECRET_KEY, "COLUMNS": "200"}
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a tasks listing [/] [bold]")).TaskId
    wait_until_finished(client, task_id)
    listed = _cli("tasks", "--endpoint", server.url, "--status", "done", env=env)
    assert listed.returncode == 0, listed.stderr
    assert task_id in listed.stdout and "a tasks listing [/] [bold]" in listed.stdout and "FINISHED" in listed.stdout
    narrow = _cli("tasks", "--endpoint", server.url, "--status", "done", env=env | {"COLUMNS": "80"})
    assert f"{task_id}  FINISHED  tiny-random:1\n" in narrow.stdout  # whole ids, not a squeezed table
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    # A key of its own (the session server's keys have other tests' tasks): serve reads keys.toml again.
    created = _cli("keys", "--create", "--data-dir", str(server.data_dir))
    fresh = dict(re.findall(r"(SecretId|SecretKey): +(\S+)", created.stdout))
    fresh_env = env | {"AIGC_IMAGE_SECRET_ID": fresh["SecretId"], "AIGC_IMAGE_SECRET_KEY": fresh["SecretKey"]}
    listings: list[subprocess.CompletedProcess[str]] = []

    def accepted() -> bool:  # the server reads keys.toml again within KeyRing.CHECK_SECONDS
        listings.append(_cli("tasks", "--endpoint", server.url, "--status", "failed", env=fresh_env))
        return "AuthFailure" not in listings[-1].stdout + listings[-1].stderr

    wait_for(accepted, timeout=10)
    failed = listings[-1]
    assert "no tasks failed for this key" in failed.stdout, failed.stdout + failed.stderr
    empty = {k: v for k, v in server_env().items() if not k.startswith("AIGC_IMAGE_SECRET")}
    none = _cli("keys", "--data-dir", str(tmp_path / "empty"), env=empty)
    assert none.returncode == 0 and none.stdout.startswith("no API keys")


def test_the_sdks_standard_retryer_reports_a_success_as_failure_and_creates_a_task_per_attempt(
    tmp_path: Path,
) -> None:
    """What docs/protocol.md warns about, shown with the SDK itself (retry.py never clears its error)."""
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    from tencentcloud.common.retry import StandardRetryer

    env = {"AIGC_IMAGE_API_RATE_LIMIT": "1", "AIGC_IMAGE_API_RATE_BURST": "1"}
    with live_server(tmp_path / "data", env=env) as live:
        client = sdk_client(live)
        client.profile.retryer = StandardRetryer(max_attempts=3, backoff_fn=lambda attempt: 1.2)
        client.CreateAigcImageTask(create_request(Prompt="the first"))  # takes this second's one request
        with pytest.raises(TencentCloudSDKException) as raised:
            client.CreateAigcImageTask(create_request(Prompt="the retried one"))
        assert raised.value.get_code() == "RequestLimitExceeded"
        created = live.task_count()
    assert created == 3  # the first, and both retries that got through, though the caller saw a failure
