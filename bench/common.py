"""Shared benchmark plumbing: start a real server subprocess, sign requests, summarise timings."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aigc_image.protocol.signing import sign_tc3_headers

ROOT = Path(__file__).resolve().parent.parent
SECRET_ID = "AKIDbenchmark000000000000000000"
SECRET_KEY = "benchmark-secret-key-0000000000"


def pin(core: int) -> None:
    """Pin this process to one CPU core (no-op where there are not enough cores)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[core % len(cores)]})


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIGC_IMAGE_")}
    environment.update(
        {
            "AIGC_IMAGE_SECRET_ID": SECRET_ID,
            "AIGC_IMAGE_SECRET_KEY": SECRET_KEY,
            "AIGC_IMAGE_API_RATE_LIMIT": "0",
            "AIGC_IMAGE_API_MAX_ACTIVE_TASKS_PER_KEY": "0",
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    return environment


@contextmanager
def server(data_dir: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Iterator[str]:
    """Run ``aigc-image serve --port 0`` (from the source tree ``cwd``); yields its base URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    command = [sys.executable, "-m", "aigc_image", "serve", "--port", "0", "--data-dir", str(data_dir), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_environment(env), cwd=cwd)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
            if found:
                yield found.group(1)
                break
            if process.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace"))
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
    finally:
        process.terminate()
        process.wait(60)


def signed_request(url: str, action: str, params: dict[str, object]) -> urllib.request.Request:
    body = json.dumps(params).encode()
    host = url.removeprefix("http://")
    headers = sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action=action, body=body, host=host, timestamp=int(time.time())
    )
    return urllib.request.Request(url + "/", data=body, headers=headers, method="POST")


def summary(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   (n={len(ordered)})"
