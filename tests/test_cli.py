"""The command line as a user meets it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from aigc_image.catalog import load_catalog
from aigc_image.hardware import default_for, probe
from tests.helpers import (
    OTHER_ID,
    OTHER_KEY,
    ROOT,
    SECRET_ID,
    SECRET_KEY,
    LiveServer,
    create_request,
    describe,
    sdk_client,
    server_env,
    wait_for,
)

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
        "/CancelAigcImageTask", "/DeleteAigcImageTask",
        "/v1/images/generations", "/v1/images/edits", "/v1/models", "/v1/models/{model}",
    }  # fmt: skip
    assert document["servers"][0]["url"].startswith("http://127.0.0.1:")
    assert set(document["components"]["securitySchemes"]) == {"TC3", "SecretIdAndKey"}
    reply = document["paths"]["/DescribeAigcImageTask"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/ErrorEnvelope"} in reply["schema"]["oneOf"]
    edits = document["paths"]["/v1/images/edits"]["post"]
    assert "multipart/form-data" in edits["requestBody"]["content"] and "429" in edits["responses"]
    create = document["paths"]["/CreateAigcImageTask"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["properties"]["ExtraParameters"]["properties"]["OutputFormat"] == {
        "type": "string",
        "maxLength": 16384,
        "pattern": "^[^\\x00]*$",  # no NUL: refused in every string
    }


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
    assert "* default model: none recorded yet: the first worker to start chooses the best model for its hardware; " \
        f"here that is {chosen.label}, the best built-in model that fits this host (no GPU;" in " ".join(
        result.stdout.split()
    )  # fmt: skip


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


def test_pull_without_the_hub_says_why_on_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the Hub is unreachable
        closed.bind(("127.0.0.1", 0))
        hub = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {k: v for k, v in server_env().items() if k != "HF_HUB_OFFLINE"} | {
        "HF_ENDPOINT": hub,
        "HF_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "aigc_image", "pull", "SD-Turbo"], capture_output=True, text=True, cwd=ROOT,
        timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(
        f"aigc-image: cannot download SD-Turbo:1.0: cannot reach the Hugging Face Hub ({hub})"
    )
    assert result.stdout.count("\n") == 1  # "Pulling ...", before the download starts
    offline = run("pull", "SD-Turbo")  # server_env sets HF_HUB_OFFLINE
    assert offline.returncode == 1 and offline.stderr.count("\n") == 1 and "HF_HUB_OFFLINE is set" in offline.stderr


def test_serve_on_a_data_dir_it_cannot_use_says_which_and_why(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "data"
    result = run("serve", "--port", "0", "--data-dir", str(data_dir))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"aigc-image: cannot use the data directory {data_dir}: Not a directory (choose another " \
        "with --data-dir or AIGC_IMAGE_DATA_DIR)\n"  # fmt: skip
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = run("serve", "--port", "0", "--data-dir", str(locked))
        assert result.returncode == 1 and "Permission denied" in result.stderr and str(locked) in result.stderr


def test_keys_create_says_running_servers_pick_it_up(tmp_path: Path) -> None:
    result = run("keys", "--create", "--data-dir", str(tmp_path))
    assert result.returncode == 0
    assert "Running servers with this data dir accept it within 1 s, without a restart" in result.stdout


@pytest.mark.slow
def test_generate_says_the_task_and_seed_and_takes_steps_guidance_and_size(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "out" / "l.png"
    result = run("generate", "a lighthouse", "-o", str(out), "--steps", "3", "--guidance", "2.5", "--size", "320x192",
                 "--seed", "11", *client_options(server))  # fmt: skip
    assert result.returncode == 0, result.stderr
    task_id = re.search(r"^task (4-AigcImage-[0-9a-f]{32})$", result.stderr, re.MULTILINE)
    assert task_id, result.stderr
    assert "tiny-random:1 · seed 11 · 320x192 · 3 steps" in result.stderr
    assert result.stdout == f"{out}\n"
    with Image.open(out) as image:
        assert image.size == (320, 192)
    shown = run("tasks", "show", task_id[1], *client_options(server))
    assert shown.returncode == 0, shown.stderr
    assert "Seed:     11" in shown.stdout and "320x192 · 3 steps · guidance 2.5" in shown.stdout
    assert re.search(r"Created:  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", shown.stdout)  # local time, with its zone


@pytest.mark.slow
def test_a_task_made_earlier_can_be_waited_for_and_fetched(server: LiveServer, tmp_path: Path) -> None:
    client = sdk_client(server)
    task_id = client.CreateAigcImageTask(create_request(Prompt="a harbour", OutputImageCount=2)).TaskId
    waited = run("tasks", "wait", task_id, "-o", str(tmp_path / "w"), *client_options(server))
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines() == [str(tmp_path / "w" / f"{task_id}-{n}.png") for n in range(2)]
    got = run("tasks", "get", task_id, "-o", str(tmp_path / "g.png"), *client_options(server))
    assert got.stdout.splitlines() == [str(tmp_path / "g.png"), str(tmp_path / "g-1.png")]
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "w" / f"{task_id}-0.png").read_bytes()
    wrong = run("tasks", "get", task_id, "-o", str(tmp_path / "g.jpg"), *client_options(server))
    assert wrong.returncode == 1 and "images are PNG: name the output .png" in wrong.stderr

    slow = client.CreateAigcImageTask(create_request(Prompt="slow", AdditionalParameters='{"steps": 400}')).TaskId
    early = run("tasks", "get", slow, *client_options(server))
    assert early.returncode == 1 and f"`aigc-image tasks wait {slow}` waits for it" in early.stderr
    listed = run("tasks", "--limit", "2", *client_options(server))
    assert slow in listed.stdout and task_id in listed.stdout
    unknown = run("tasks", "show", "4-AigcImage-" + "0" * 32, *client_options(server))
    assert unknown.returncode == 1 and unknown.stderr.startswith("aigc-image: ResourceNotFound.TaskNotFound:")


@pytest.mark.slow
def test_the_progress_line_fits_80_columns(server: LiveServer, tmp_path: Path) -> None:
    """In a real terminal 80 columns wide, the steps and the ETA are whole, beside the bar."""
    screen = in_terminal(["generate", "a harbour", "-o", str(tmp_path / "h.png"), "--steps", "40",
                          *client_options(server)], columns=80)  # fmt: skip
    bars = re.findall(r"generating .{0,60}?(\d+)/40 steps  ETA (\d+:\d\d:\d\d|-:--:--)", screen)
    assert bars, screen
    assert "…" not in screen


# A task that keeps the session server's one worker busy for minutes on a CPU, until it is cancelled.
LONG_TASK = '{"steps": 999, "size": "512x512"}'


@pytest.mark.slow
def test_tasks_cancel_and_delete_say_what_happened_on_one_line(server: LiveServer) -> None:
    """Every answer: cancelled (waiting, running, again), finished, not finished, unknown, another key's."""
    client = sdk_client(server)
    running = client.CreateAigcImageTask(create_request(Prompt="long", AdditionalParameters=LONG_TASK)).TaskId
    try:
        wait_for(lambda: describe(client, running).Status == "RUN", timeout=120)
        waiting = client.CreateAigcImageTask(create_request(Prompt="behind it")).TaskId
        assert "Status:   PENDING, next in line\n" in run("tasks", "show", waiting, *client_options(server)).stdout

        early = run("tasks", "delete", waiting, *client_options(server))
        assert (early.returncode, early.stdout) == (1, "")
        assert early.stderr == f"aigc-image: FailedOperation.TaskNotFinished: task {waiting} has not finished: " \
            f"`aigc-image tasks cancel {waiting}` stops it, then delete it\n"  # fmt: skip
        for task_id in (waiting, running, running):  # cancelling a cancelled task answers the same
            cancelled = run("tasks", "cancel", task_id, *client_options(server))
            assert (cancelled.returncode, cancelled.stdout, cancelled.stderr) == (0, f"task {task_id} cancelled\n", "")
        shown = run("tasks", "show", running, *client_options(server)).stdout
        assert "Failed:   The task was cancelled by its owner (CancelAigcImageTask) before it finished." in shown
    finally:
        run("tasks", "cancel", running, *client_options(server))  # nothing left running for the next test

    done = client.CreateAigcImageTask(create_request(Prompt="short", AdditionalParameters='{"steps": 1}')).TaskId
    wait_for(lambda: describe(client, done).Status == "DONE", timeout=120)
    url = describe(client, done).ImageUrls[0]
    assert httpx.get(url).status_code == 200
    late = run("tasks", "cancel", done, *client_options(server))
    assert (late.returncode, late.stdout) == (1, "")
    assert late.stderr == f"aigc-image: FailedOperation.TaskFinished: Task {done} has already finished (DONE); " \
        "nothing to cancel.\n"  # fmt: skip
    deleted = run("tasks", "delete", done, *client_options(server))
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, f"task {done} deleted\n", "")
    assert httpx.get(url).status_code == 403 and not (server.data_dir / "results" / done).exists()  # its image too
    for action in ("delete", "cancel", "show"):
        gone = run("tasks", action, done, *client_options(server))
        assert gone.returncode == 1
        assert gone.stderr == f"aigc-image: ResourceNotFound.TaskNotFound: Task {done} does not exist.\n"

    theirs = sdk_client(server, OTHER_ID, OTHER_KEY).CreateAigcImageTask(create_request(Prompt="theirs")).TaskId
    for action in ("cancel", "delete"):
        refused = run("tasks", action, theirs, *client_options(server))
        assert (refused.returncode, refused.stderr) == (1, f"aigc-image: ResourceNotFound.TaskNotFound: Task {theirs} "
                                                           "does not exist.\n")  # fmt: skip
    malformed = run("tasks", "cancel", "not-a-task", *client_options(server))
    assert malformed.returncode == 1 and malformed.stderr.startswith("aigc-image: InvalidParameterValue")


@pytest.mark.slow
def test_generate_shows_the_tasks_ahead_then_the_steps_and_ctrl_c_says_how_to_wait_or_cancel(
    server: LiveServer, tmp_path: Path
) -> None:
    """In an 80-column terminal: a task behind a long one and one more waits with "1 task ahead";
    Ctrl-C leaves it queued and names both commands; `tasks wait` follows it as each task ahead is
    cancelled, to its steps and its image."""
    client = sdk_client(server)
    long = client.CreateAigcImageTask(create_request(Prompt="long", AdditionalParameters=LONG_TASK)).TaskId
    ahead = ""
    try:
        wait_for(lambda: describe(client, long).Status == "RUN", timeout=120)
        ahead = client.CreateAigcImageTask(create_request(Prompt="ahead", AdditionalParameters='{"steps": 998}')).TaskId
        generate_args = ["generate", "a harbour", "-o", str(tmp_path / "h.png"), "--steps", "5"]
        with Terminal([*generate_args, *client_options(server)], columns=80) as generate:
            task_id = generate.expect(r"^task (4-AigcImage-[0-9a-f]{32})$")[1]
            generate.expect(r"waiting, 1 task ahead ")
            assert "PENDING, 1 task ahead" in run("tasks", "show", task_id, *client_options(server)).stdout
            generate.process.send_signal(signal.SIGINT)
            assert generate.finish() == 130
        said = generate.text.split("stopped waiting", 1)[1]
        assert said.splitlines() == [
            "; the task goes on. To wait for it again, or to stop it:",
            f"  aigc-image tasks wait {task_id}",
            f"  aigc-image tasks cancel {task_id}",
        ]
        assert all(len(line) <= 80 for line in said.splitlines())

        with Terminal(["tasks", "wait", task_id, "-o", str(tmp_path), *client_options(server)], columns=80) as waited:
            waited.expect(r"waiting, 1 task ahead ")
            assert run("tasks", "cancel", long, *client_options(server)).returncode == 0
            waited.expect(r"waiting, next in line ")  # the other task runs now
            assert run("tasks", "cancel", ahead, *client_options(server)).returncode == 0
            waited.expect(r"generating .{0,60}?\d/5 steps  ETA")
            assert waited.finish() == 0
        assert (tmp_path / f"{task_id}-0.png").is_file() and "…" not in waited.text
    finally:  # nothing left running for the next test, whatever failed
        for task_id in (long, ahead):
            if task_id:
                run("tasks", "cancel", task_id, *client_options(server))


def client_options(server: LiveServer) -> list[str]:
    return ["--endpoint", server.url, "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY]


class Terminal:
    """``aigc-image ARGS`` in a pseudo-terminal of ``columns`` columns, read as it writes."""

    def __init__(self, args: list[str], columns: int) -> None:
        self.main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {k: v for k, v in server_env().items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
        self.process = subprocess.Popen([sys.executable, "-m", "aigc_image", *args], stdin=child, stdout=child,
                                        stderr=child, env=env, cwd=ROOT)  # fmt: skip
        os.close(child)
        self.raw = b""

    @property
    def text(self) -> str:
        """What it wrote so far, without the terminal's control sequences; carriage returns as new lines."""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.raw.decode("utf-8", "replace"))
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def _read(self, timeout: float) -> bool:
        """One chunk, waiting up to ``timeout``; False once the terminal is closed (the process ended)."""
        ready, _, _ = select.select([self.main], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.main, 65536)
        except OSError:
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """Read until ``pattern`` appears (bounded)."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.text, re.MULTILINE)):
            assert time.monotonic() < deadline and self._read(deadline - time.monotonic()), (pattern, self.text)
        return found

    def finish(self) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        return self.process.wait(10)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:  # a failed test: nothing left behind
            self.process.kill()
            self.process.wait()
        os.close(self.main)


def in_terminal(args: list[str], columns: int) -> str:
    """What ``aigc-image ARGS`` writes to a pseudo-terminal of ``columns`` columns, once it has ended."""
    with Terminal(args, columns) as terminal:
        assert terminal.finish() == 0
        return terminal.text
