"""Many processes on one PostgreSQL: API processes and workers as real subprocesses.

The deployment of docs/operations.md "Several hosts", on loopback: every `serve --no-worker`
and `worker` process points at one database and shares one result directory.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.helpers import (
    ROOT,
    LiveServer,
    assert_error_envelope,
    create_request,
    describe,
    live_server,
    sdk_client,
    server_env,
    wait_for,
    wait_until_finished,
)
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow


@contextmanager
def worker_process(server: LiveServer, env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """One `aigc-image worker` subprocess with the server's settings; SIGTERM at the end must exit 0."""
    command = [sys.executable, "-m", "aigc_image", "worker", "--data-dir", str(server.data_dir)]
    command += ["--config", str(server.data_dir / "config.toml")]
    with (server.data_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(command, env=server_env(env), cwd=ROOT, stdout=log, stderr=log)
    try:
        yield process
        process.terminate()
        assert process.wait(60) == 0, f"{name} did not exit cleanly"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_api_processes_and_three_workers_complete_100_sdk_tasks_each_once(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    env = {"AIGC_IMAGE_DATABASE_URL": url}
    data = tmp_path / "shared"
    with ExitStack() as stack:
        apis = [stack.enter_context(live_server(data, "--no-worker", env=env)) for _ in range(2)]
        for n in range(3):
            stack.enter_context(worker_process(apis[0], env, f"worker{n}"))
        clients = [sdk_client(api) for api in apis]
        ids = [clients[n % 2].CreateAigcImageTask(create_request(Prompt=f"lighthouse {n}")).TaskId for n in range(100)]
        assert len(set(ids)) == 100

        for n, task_id in enumerate(ids):  # every task is visible through either API process
            reply = wait_until_finished(clients[(n + 1) % 2], task_id, timeout=240)[-1]
            assert reply.Status == "DONE" and len(reply.ImageUrls) == 1, (task_id, reply.Message)

    with psycopg.connect(url) as db:
        rows = db.execute("SELECT task_id, attempts, result_keys, worker_id FROM tasks").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {r[1] for r in rows} == {1}, "a task ran more than once"
    assert all(r[2] == f'["{r[0]}/1-0.png"]' for r in rows)
    stored = sorted(p.relative_to(data / "results").as_posix() for p in (data / "results").rglob("*.png"))
    assert stored == sorted(f"{task_id}/1-0.png" for task_id in ids), "an image is missing or was stored twice"
    assert len({r[3] for r in rows}) >= 2, "the work was not shared between workers"


SLOW_MODEL = """
[[models]]
name = "slow"
version = "1"
default = true
engine = "tiny-random"
steps = 60
guidance_scale = 6.0
width = 64
height = 64
"""


def test_a_database_restart_loses_no_task_and_the_api_answers_internal_error(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """R7 with real processes: PostgreSQL stops while a worker is mid-task and comes back."""
    registry = tmp_path / "models.toml"
    registry.write_text(SLOW_MODEL)
    url = postgres.new_database()
    env = {"AIGC_IMAGE_DATABASE_URL": url, "AIGC_IMAGE_MODELS_REGISTRY_FILE": str(registry)}
    with live_server(tmp_path / "data", env=env) as server:
        client = sdk_client(server)
        running = client.CreateAigcImageTask(create_request(Prompt="mid-task")).TaskId
        wait_for(lambda: describe(client, running).Status == "RUN", timeout=120)

        postgres.stop()
        try:
            for call in (
                lambda: describe(client, running),
                lambda: client.CreateAigcImageTask(create_request(Prompt="during the outage")),
            ):
                with pytest.raises(TencentCloudSDKException) as outage:
                    call()
                assert_error_envelope(outage.value, "InternalError")
            # The worker finishes its image meanwhile and must wait to record it.
            log = server.data_dir / "server.log"
            wait_for(lambda: f"task {running}: store unavailable" in log.read_text(errors="replace"))
        finally:
            postgres.start()

        queued = client.CreateAigcImageTask(create_request(Prompt="after the outage")).TaskId
        for task_id in (running, queued):
            final = wait_until_finished(client, task_id, timeout=180)[-1]
            assert final.Status == "DONE" and len(final.ImageUrls) == 1, final.Message
    text = log.read_text()
    assert "task store unavailable" in text  # the API and the worker said so, in one line each
    assert "Traceback" not in text
