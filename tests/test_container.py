"""The container image, built here with no registry (deploy/build-image: a Debian base made with
mmdebstrap, wheels built on this host) and run with podman: the official SDK creates a
tiny-random task against it and gets DONE, by each of its commands.

The first build takes minutes (the base and the wheels are then cached in
/var/cache/aigc-image-build, and podman keeps the dependency layer until pyproject.toml changes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.helpers import (
    ROOT,
    SECRET_ID,
    SECRET_KEY,
    create_request,
    download,
    sdk_client_at,
    wait_for,
    wait_until_finished,
)

pytestmark = pytest.mark.slow
TAG = "localhost/aigc-image:cpu"
NAME = f"aigc-test-{os.getpid()}"
ENV = {
    "AIGC_IMAGE_MODELS_DEFAULT_MODEL": "tiny-random",
    "AIGC_IMAGE_SECRET_ID": SECRET_ID,
    "AIGC_IMAGE_SECRET_KEY": SECRET_KEY,
    "AIGC_IMAGE_WORKER_TORCH_THREADS": "1",
    "AIGC_IMAGE_API_RATE_LIMIT": "1000",  # the test polls quickly
    "AIGC_IMAGE_API_RATE_BURST": "1000",
    "HF_HUB_OFFLINE": "1",
}


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in ("podman", "buildah", "mmdebstrap") if shutil.which(tool) is None]
    why = f"{', '.join(missing)} not installed" if missing else "" if os.geteuid() == 0 else "mmdebstrap needs root"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the container test is required in CI: {why} (.ci/run installs them)")
        pytest.skip(why)
    build = subprocess.run(
        ["bash", "deploy/build-image", "--tag", TAG], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, build.stdout + build.stderr
    print(build.stdout)  # each step's time, shown with -s
    return TAG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def container(name: str, *args: str, port: int | None = None, volume: str) -> Iterator[str]:
    """``podman run -d`` the image with ``args`` as its command; removed at the end."""
    options = ["--name", name, "-v", f"{volume}:/var/lib/aigc-image"]
    options += [f"--env={key}={value}" for key, value in ENV.items()]
    if port is not None:
        options += ["-p", f"127.0.0.1:{port}:8000", f"--env=AIGC_IMAGE_PUBLIC_URL=http://127.0.0.1:{port}"]
    podman("run", "-d", *options, TAG, *args)
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "-f", "-v", "-t", "5", name], capture_output=True, timeout=120)


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume for the data dir: podman gives it the image's directory, owned by aigc."""
    name = f"{NAME}-data"
    podman("volume", "create", name)
    try:
        yield name
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", name], capture_output=True, timeout=120)


def ready(port: int, name: str) -> bool:
    state = podman("inspect", "--format", "{{.State.Status}}", name)
    assert state == "running", f"{name} is {state}:\n{podman('logs', name)}"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def run_one_task(port: int) -> None:
    client = sdk_client_at(f"127.0.0.1:{port}")
    task_id = client.CreateAigcImageTask(create_request(Prompt="a lighthouse in a container")).TaskId
    final = wait_until_finished(client, task_id, timeout=180)[-1]
    assert final.Status == "DONE", final.Message
    (url,) = final.ImageUrls
    assert url.startswith(f"http://127.0.0.1:{port}/results/")
    assert download(url).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_image_serves_as_an_unprivileged_user_and_stops_cleanly(image: str, volume: str) -> None:
    port = free_port()
    with container(f"{NAME}-serve", port=port, volume=volume) as name:  # the default command: serve
        wait_for(lambda: ready(port, name), timeout=240)
        run_one_task(port)

        assert podman("exec", name, "id", "-u") == "10001"
        processes = podman("exec", name, "cat", "/proc/1/cmdline").replace("\0", " ")
        assert processes.startswith("tini -- aigc-image serve"), processes
        podman("healthcheck", "run", name)  # fails (exit 1) when unhealthy
        config = json.loads(podman("image", "inspect", image))[0]["Config"]
        assert set(config["Volumes"]) == {"/var/lib/aigc-image", "/var/cache/huggingface"}

        # SIGTERM reaches serve through tini: it stops its worker and exits 0, well before podman's kill.
        podman("stop", "-t", "60", name, timeout=120)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name) == "0", podman("logs", name)


def test_the_api_alone_and_a_worker_alone_by_command_share_a_volume(image: str, volume: str) -> None:
    port = free_port()
    with (
        container(f"{NAME}-api", "serve", "--no-worker", port=port, volume=volume) as api,
        container(f"{NAME}-worker", "worker", volume=volume),
    ):
        wait_for(lambda: ready(port, api), timeout=240)  # ready: the worker reported in
        run_one_task(port)
