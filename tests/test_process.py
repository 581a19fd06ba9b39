"""The real `aigc-image serve` process: first start, a killed worker, shutdown."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.helpers import (
    ROOT,
    LiveServer,
    create_request,
    live_server,
    sdk_client,
    server_env,
    wait_for,
    wait_until_finished,
)
from tests.stores import Backend

pytestmark = pytest.mark.slow

SLOW_MODEL = """
[[models]]
name = "slow"
version = "1"
default = true
engine = "tiny-random"
steps = 150
guidance_scale = 6.0
width = 64
height = 64
"""


def worker_children(server: LiveServer) -> list[int]:
    """Live child processes of the server (spawned by any of its threads)."""
    pid = server.process.pid
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def test_first_start_creates_and_prints_a_key_pair(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    process = subprocess.Popen(
        [sys.executable, "-m", "aigc_image", "serve", "--port", "0", "--no-worker", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=server_env(), cwd=ROOT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while len(lines) < 50 and "listening on" not in "".join(lines[-1:]):
            lines.append(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()
    secret_id = next(line.split()[-1] for line in lines if "SecretId:" in line)
    secret_key = next(line.split()[-1] for line in lines if "SecretKey:" in line)
    assert secret_id.startswith("AKID") and len(secret_key) == 32
    keys_file = data_dir / "keys.toml"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert secret_key in keys_file.read_text()
    assert "listening on http://127.0.0.1:" in lines[-1]

    # The second start reuses the pair, prints no secret, and accepts it.
    with live_server(data_dir, "--no-worker") as server:
        assert "SecretKey" not in server.log.read_text()
        task_id = sdk_client(server, secret_id, secret_key).CreateAigcImageTask(create_request(Prompt="x")).TaskId
        assert task_id.startswith("4-AigcImage-")


def test_a_worker_killed_mid_task_is_replaced_and_the_task_still_completes_once(
    tmp_path: Path, backend: Backend
) -> None:
    """R2 on each store: SIGKILL mid-image; the next attempt completes it, once."""
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL)
    env = {
        "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry),
        "AIGC_IMAGE_WORKER_LEASE_SECONDS": "2",
        "AIGC_IMAGE_DATABASE_URL": backend.url,
    }
    with live_server(tmp_path / "data", env=env) as server:
        client = sdk_client(server)
        task_id = client.CreateAigcImageTask(create_request(Prompt="x", ModelName="slow")).TaskId
        wait_for(lambda: task_row(backend, task_id)["status"] == "RUN")
        [first_worker] = worker_children(server)
        os.kill(first_worker, signal.SIGKILL)  # the power goes out on the GPU, as far as the task knows

        wait_for(lambda: worker_children(server) not in ([], [first_worker]))  # the supervisor restarts it
        final = wait_until_finished(client, task_id, timeout=120)[-1]
        assert final.Status == "DONE" and len(final.ImageUrls) == 1
        row = task_row(backend, task_id)
        assert row["attempts"] == 2
        assert row["result_keys"] == f'["{task_id}/2-0.png"]'
        assert [p.name for p in (server.data_dir / "results" / task_id).iterdir()] == ["2-0.png"]


QUICK_AND_POISON_MODELS = """
[[models]]
name = "quick"
version = "1"
default = true
engine = "tiny-random"
steps = 2
width = 64
height = 64

[[models]]
name = "poison"  # tests.classifiers:crash_on_48px_images kills the worker on its images
version = "1"
engine = "tiny-random"
steps = 2
width = 48
height = 48
"""


def test_a_task_that_kills_its_worker_every_time_fails_and_others_keep_flowing(tmp_path: Path) -> None:
    """R5: a "poison" task crashes the worker process (os._exit) on every attempt. After
    worker.max_attempts it FAILs naming the cause; a normal task created after it is DONE."""
    registry = tmp_path / "models.toml"
    registry.write_text(QUICK_AND_POISON_MODELS)
    env = {
        "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry),
        "AIGC_IMAGE_WORKER_LEASE_SECONDS": "2",
        "AIGC_IMAGE_WORKER_MAX_ATTEMPTS": "2",
        "AIGC_IMAGE_MODERATION_CLASSIFIER": "tests.classifiers:crash_on_48px_images",
    }
    with live_server(tmp_path / "data", env=env) as server:
        client = sdk_client(server)
        poison = client.CreateAigcImageTask(create_request(Prompt="x", ModelName="poison")).TaskId
        normal = client.CreateAigcImageTask(create_request(Prompt="y", ModelName="quick")).TaskId
        final = wait_until_finished(client, poison, timeout=180)[-1]
        assert final.Status == "FAIL" and "stopped responding 2 times" in final.Message
        assert wait_until_finished(client, normal, timeout=120)[-1].Status == "DONE"
        assert (server.data_dir / "server.log").read_text().count("worker exited with code 137") == 2


def task_row(backend: Backend, task_id: str) -> dict[str, Any]:
    """The task's row, read straight from whichever database the server uses."""
    query = "SELECT status, attempts, result_keys FROM tasks WHERE task_id = "
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(query + "?", (task_id,)).fetchone()
    else:
        with psycopg.connect(backend.url, row_factory=dict_row) as pg:
            row = pg.execute(query + "%s", (task_id,)).fetchone()
    return dict(row) if row else {"status": ""}


def test_sigterm_stops_api_and_worker_cleanly(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        children = worker_children(server)
        assert len(children) == 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        wait_for(lambda: not Path(f"/proc/{children[0]}").exists() or _is_zombie(children[0]), timeout=30)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_the_worker_child_exits_when_serve_is_killed(tmp_path: Path) -> None:
    with live_server(tmp_path / "data") as server:
        [child] = worker_children(server)
        server.process.kill()
        server.process.wait(30)
        wait_for(lambda: _is_zombie(child) or not Path(f"/proc/{child}").exists(), timeout=30)


def test_sigterm_hands_a_long_task_back_and_exits_0(tmp_path: Path) -> None:
    """A standalone worker gets SIGTERM mid-image; past its grace period it hands the task back."""
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL)
    env = {"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry), "AIGC_IMAGE_WORKER_SHUTDOWN_GRACE": "0.5"}
    with live_server(tmp_path / "data", "--no-worker", env=env) as server:
        task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ModelName="slow")).TaskId
        command = [sys.executable, "-m", "aigc_image", "worker", "--data-dir", str(server.data_dir)]
        command += ["--config", str(server.data_dir / "config.toml")]
        with subprocess.Popen(command, env=server_env(env), cwd=ROOT, stderr=subprocess.PIPE, text=True) as worker:
            try:
                wait_for(lambda: task_row(Backend("sqlite", f"sqlite:///{server.db_path}"), task_id)["status"] == "RUN")
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(60) == 0
            finally:
                worker.kill()
            assert worker.stderr is not None and "handed back to the queue" in worker.stderr.read()
        with sqlite3.connect(server.db_path) as db:
            status, attempts = db.execute("SELECT status, attempts FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        assert (status, attempts) == ("WAIT", 0)


def test_a_second_sigterm_exits_at_once_and_the_lease_covers_the_task(tmp_path: Path) -> None:
    """R6, second signal: the worker is inside its grace period; a second SIGTERM ends it now,
    without waiting, and the task stays RUN until its lease expires."""
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL.replace("steps = 150", "steps = 900"))  # far longer than this test
    env = {"AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry), "AIGC_IMAGE_WORKER_SHUTDOWN_GRACE": "600"}
    with live_server(tmp_path / "data", "--no-worker", env=env) as server:
        task_id = sdk_client(server).CreateAigcImageTask(create_request(Prompt="x", ModelName="slow")).TaskId
        command = [sys.executable, "-m", "aigc_image", "worker", "--data-dir", str(server.data_dir)]
        command += ["--config", str(server.data_dir / "config.toml")]
        backend = Backend("sqlite", f"sqlite:///{server.db_path}")
        with subprocess.Popen(command, env=server_env(env), cwd=ROOT, stderr=subprocess.PIPE, text=True) as worker:
            try:
                wait_for(lambda: task_row(backend, task_id)["status"] == "RUN")
                worker.send_signal(signal.SIGTERM)
                with pytest.raises(subprocess.TimeoutExpired):
                    worker.wait(1)  # first signal: the image may finish within the 600 s grace
                worker.send_signal(signal.SIGTERM)
                code = worker.wait(30)
            finally:
                worker.kill()
            assert worker.stderr is not None
            log = worker.stderr.read()
        assert code == 1, log
        assert "second signal" in log
        assert task_row(backend, task_id)["status"] == "RUN"  # not finished, not handed back: the lease decides


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_typo_in_the_models_to_preload_stops_the_start_with_one_line(tmp_path: Path, command: str) -> None:
    """Not a worker that starts, logs the typo and serves without the model the operator wanted."""
    env = server_env({"AIGC_IMAGE_WORKER_PRELOAD": "tiny-random,Hunyuan:9"})
    args = [sys.executable, "-m", "aigc_image", command, "--data-dir", str(tmp_path)]
    result = subprocess.run(args + (["--port", "0"] if command == "serve" else []), env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("aigc-image: configuration error: worker.preload: 'Hunyuan:9' is not in the model catalogue")
