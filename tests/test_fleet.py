"""Several hosts over a real network: PostgreSQL, two API processes behind a balancer and two
workers, each in a network namespace of its own (tests/fleet.py draws the networks), driven by
the official SDK from a client host. Links are cut with ``ip link set down`` on the switch.

Checks docs/operations.md's several-hosts promises where they matter, across a network: any API
process answers for any task and any worker runs it; image URLs work from either API process
behind one ``public_url``; a worker cut off mid-task loses its task to the other within the lease
and throws its own images away; an API process cut off from the database answers a clean
``InternalError`` and serves again when the link returns; nothing is lost or done twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import mps_client

from aigc_image.store.postgres import PostgresDialect
from tests.fleet import APIS, BACK, WORKERS, Fleet, fleet, network
from tests.helpers import (
    assert_error_envelope,
    create_request,
    describe,
    download,
    sdk_client_at,
    wait_for,
    wait_until_finished,
)
from tests.netns import Network, why_unavailable
from tests.postgres_server import PostgresServer

LEASE_SECONDS = 10
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def net() -> Iterator[Network]:
    why = why_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the several-hosts test is required in CI: {why}")
        pytest.skip(why)
    hosts = network()
    try:
        yield hosts
    finally:
        hosts.close()


def client_of(url: str) -> mps_client.MpsClient:
    """The official SDK, pointed at one API process, as the docs tell users to."""
    return sdk_client_at(url.removeprefix("http://"))


def create(client: mps_client.MpsClient, prompt: str, **fields: object) -> str:
    return str(client.CreateAigcImageTask(create_request(Prompt=prompt, **fields)).TaskId)


def stored_images(fleet: Fleet) -> set[str]:
    results = fleet.data_dir / "results"
    return {path.relative_to(results).as_posix() for path in results.rglob("*.png")}


def test_postgres_connections_give_up_on_a_dead_link_unless_the_url_says_otherwise(postgres: PostgresServer) -> None:
    """What lets the cuts below end in errors within seconds: without a bound, TCP retransmits
    into a dead link for about 15 minutes while the connection (and its lock) hangs."""
    url = postgres.new_database()
    for given, expected in (("", "10000"), ("?tcp_user_timeout=2500", "2500")):
        dialect = PostgresDialect(url + given)
        with dialect.transaction() as db:
            parameters = db.info.get_parameters()
        dialect.close()
        assert parameters["tcp_user_timeout"] == expected
        assert (parameters["keepalives"], parameters["keepalives_idle"]) == ("1", "10")


@pytest.mark.slow
def test_two_api_hosts_and_two_worker_hosts_over_a_real_network(net: Network, tmp_path: Path) -> None:
    env = {"AIGC_IMAGE_WORKER_LEASE_SECONDS": str(LEASE_SECONDS), "NO_PROXY": "*"}
    with fleet(net, tmp_path, env) as f, net.entered("client"):
        clients = {host: client_of(url) for host, url in f.api_urls.items()}
        created: list[str] = []

        # Tasks created through either API process, described through the other, run by either worker.
        for n in range(16):
            created.append(create(clients[APIS[n % 2]], f"lighthouse {n}"))
        for n, task_id in enumerate(created):
            final = wait_until_finished(clients[APIS[(n + 1) % 2]], task_id, timeout=240)[-1]
            assert final.Status == "DONE", final.Message
        ran_on = {row[0] for row in f.rows("SELECT DISTINCT worker_id FROM tasks")}
        assert ran_on == {f.worker_id(host) for host in WORKERS}, "the work was not shared between the workers"

        # Image URLs: under the balancer's public_url; the same bytes through it and from each API process.
        for n, task_id in enumerate(created[:4]):
            (url,) = describe(clients[APIS[n % 2]], task_id).ImageUrls
            assert url.startswith(f"{f.public_url}/results/{task_id}/"), url
            image = download(url)
            assert image.startswith(PNG)
            for api_url in f.api_urls.values():
                assert download(url.replace(f.public_url, api_url)) == image

        # api1 loses its link to the database: clean InternalError envelopes, not ready; api2 goes on.
        api1, api2 = (clients[host] for host in APIS)
        net.cut("api1", BACK)
        try:
            for call in (lambda: describe(api1, created[0]), lambda: create(api1, "during the cut")):
                with pytest.raises(TencentCloudSDKException) as cut:
                    call()
                assert_error_envelope(cut.value, "InternalError")
            readiness = httpx.get(f"{f.api_urls['api1']}/readyz", timeout=60)
            assert readiness.status_code == 503 and "unavailable" in readiness.text, readiness.text
            meanwhile = create(api2, "while api1 is cut off")
            created.append(meanwhile)
            assert wait_until_finished(api2, meanwhile)[-1].Status == "DONE"
        finally:
            net.mend("api1", BACK)
        wait_for(lambda: _answers(api1, created[0]), timeout=60)
        after = create(api1, "after the link returned")
        created.append(after)
        assert wait_until_finished(api1, after)[-1].Status == "DONE"

        # A worker loses its link mid-task: the other takes the task over once its lease expires.
        long_task = create(api2, "a long one", AdditionalParameters=json.dumps({"steps": 900}))
        created.append(long_task)
        wait_for(lambda: _holder(f, long_task) is not None, timeout=120)
        holder = _holder(f, long_task)
        assert holder is not None
        (other,) = set(WORKERS) - {holder}
        net.cut(holder, BACK)
        try:
            # Still cut off: only the other worker can have taken it.
            wait_for(lambda: _holder(f, long_task) == other, timeout=LEASE_SECONDS * 6)
            assert f.rows("SELECT attempts FROM tasks WHERE task_id = %s", long_task) == [(2,)]
            final = wait_until_finished(api2, long_task, timeout=300)[-1]
            assert final.Status == "DONE", final.Message
        finally:
            net.mend(holder, BACK)

        # Nothing lost, nothing done twice: every task DONE once, with the images of its last
        # attempt only; the cut worker, back on the network, finds its lease gone and deletes its own.
        rows = f.rows("SELECT task_id, status, attempts, result_keys FROM tasks")
        assert sorted(row[0] for row in rows) == sorted(created)
        assert {row[1] for row in rows} == {"DONE"}
        attempts_of = {row[0]: row[2] for row in rows}
        assert attempts_of == {task_id: 2 if task_id == long_task else 1 for task_id in created}
        expected = {f"{task_id}/{attempts_of[task_id]}-0.png" for task_id in created}
        assert {key for row in rows for key in json.loads(row[3])} == expected
        wait_for(lambda: stored_images(f) == expected, timeout=120)

        # The cut worker reports in again, and both stop cleanly.
        wait_for(lambda: f.worker_id(holder) in _live_workers(f.public_url), timeout=60)
        for host in WORKERS:
            assert f.stop(host) == 0, f"{host} did not stop cleanly"
    for host in (*APIS, *WORKERS):
        assert "Traceback" not in (tmp_path / f"{host}.log").read_text(errors="replace"), host


def _live_workers(url: str) -> set[str]:
    return {worker["id"] for worker in httpx.get(f"{url}/readyz", timeout=30).json().get("workers", [])}


def _answers(client: mps_client.MpsClient, task_id: str) -> bool:
    try:
        describe(client, task_id)
    except TencentCloudSDKException:
        return False
    return True


def _holder(fleet: Fleet, task_id: str) -> str | None:
    """The worker host running the task now, if any."""
    ((status, worker),) = fleet.rows("SELECT status, worker_id FROM tasks WHERE task_id = %s", task_id)
    by_id = {fleet.worker_id(host): host for host in WORKERS}
    return by_id.get(worker) if status == "RUN" else None
