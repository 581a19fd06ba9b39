"""The deployment files in deploy/: the Kubernetes manifests render with ``kubectl kustomize``,
the systemd units pass ``systemd-analyze verify``, and every file's settings and commands are
ones aigc-image accepts (a typo in a variable name would stop the process at start).
The container image is built and run in test_container.py; the namespaced fleet in test_fleet.py.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigc_image.catalog import load_catalog
from aigc_image.cli import _parser
from aigc_image.config import load_settings
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed here")
    return path


def accepted(command: list[str]) -> None:
    """``aigc-image COMMAND...`` parses (the flags exist, the values are valid)."""
    try:
        _parser().parse_args(command)
    except SystemExit as exc:
        raise AssertionError(f"aigc-image does not accept {command}") from exc


def loads(environment: dict[str, str]) -> None:
    """The settings load: every AIGC_IMAGE_* name is a setting and every value valid for it;
    a default model names a model of the catalogue."""
    settings = load_settings(environ=environment)
    if settings.models.default_model:
        load_catalog(settings.models.registry_file).with_default(settings.models.default_model)


# Kubernetes


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [require("kubectl"), "kustomize", str(DEPLOY / "k8s" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    maps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(maps[source["configMapRef"]["name"]]["data"])
        else:
            data = secrets[source["secretRef"]["name"]]["data"]
            environment.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    environment.update({item["name"]: item["value"] for item in container.get("env", [])})
    return environment


@pytest.mark.parametrize("overlay", ["base", "example"])
def test_kubernetes_manifests_render_with_probes_gpus_budgets_and_settings_aigc_image_accepts(overlay: str) -> None:
    docs = render(overlay)
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"aigc-image-api", "aigc-image-worker"}

    (api,) = deployments["aigc-image-api"]["spec"]["template"]["spec"]["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    accepted(api["args"])
    api_env = container_environment(docs, api)
    loads(api_env)
    assert api_env["AIGC_IMAGE_SECRET_ID"] and api_env["AIGC_IMAGE_STORAGE_BACKEND"] == "s3"

    (worker,) = deployments["aigc-image-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    accepted(worker["args"])
    worker_env = container_environment(docs, worker)
    loads(worker_env)
    assert "AIGC_IMAGE_SECRET_KEY" not in worker_env, "workers need no API keys"
    assert worker_env["AIGC_IMAGE_DATABASE_URL"] == api_env["AIGC_IMAGE_DATABASE_URL"]
    # Long enough for the running image's grace period and the hand-back.
    grace = deployments["aigc-image-worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > load_settings(environ=worker_env).worker.shutdown_grace

    (service,) = by_kind(docs, "Service").values()
    assert service["spec"]["selector"] == deployments["aigc-image-api"]["spec"]["selector"]["matchLabels"]
    budgets = by_kind(docs, "PodDisruptionBudget")
    assert {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets.values()} == {
        "api",
        "worker",
    }

    scalers = by_kind(docs, "ScaledObject")
    if overlay == "example":
        (scaler,) = scalers.values()
        assert scaler["spec"]["scaleTargetRef"]["name"] == "aigc-image-worker"
        assert scaler["spec"]["minReplicaCount"] >= 1  # an API process is ready only while a worker lives
        (trigger,) = scaler["spec"]["triggers"]
        assert "aigc_image_tasks_waiting" in trigger["metadata"]["query"]
        assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {"aigc-image"}
    else:
        assert not scalers


def test_the_queue_metric_that_keda_scales_on_is_exported() -> None:
    text = (ROOT / "aigc_image" / "metrics.py").read_text()
    assert '"aigc_image_tasks_waiting"' in text


# systemd


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Checked as installed, except that ExecStart points at this checkout's aigc-image (verify
    refuses a command that does not exist). Instances are checked as @cpu and @cuda:
    systemd-analyze verify (252) cannot name an instance with a colon, even of systemd's own
    units; systemctl can."""
    analyze = require("systemd-analyze")
    executable = Path(shutil.which("aigc-image") or ROOT / ".venv" / "bin" / "aigc-image")
    assert executable.exists(), "aigc-image is not installed in this environment"
    for unit in DEPLOY.glob("systemd/*.service"):
        text = unit.read_text().replace("/opt/aigc-image/bin/aigc-image", str(executable))
        (tmp_path / unit.name).write_text(text)
    units = ["aigc-image-api.service", "aigc-image-worker@cpu.service", "aigc-image-worker@cuda.service"]
    done = subprocess.run(
        [analyze, "verify", *units],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    # verify exits 0 on a misspelt option: any complaint fails.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout


def env_file(path: Path) -> dict[str, str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_systemd_units_run_commands_and_settings_aigc_image_accepts() -> None:
    common, api_only = env_file(DEPLOY / "systemd" / "aigc-image.env"), env_file(DEPLOY / "systemd" / "api.env")
    for unit, environment in (
        ("aigc-image-api.service", {**common, **api_only}),
        ("aigc-image-worker@.service", common),
    ):
        text = (DEPLOY / "systemd" / unit).read_text()
        assert ("api.env" in text) == (unit == "aigc-image-api.service"), "workers need no API keys"
        (exec_start,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
        command = shlex.split(exec_start.replace("%i", "cuda:0"))
        assert command[0] == "/opt/aigc-image/bin/aigc-image"
        accepted(command[1:])
        fixed = dict(line.split("=", 1) for line in re.findall(r"^Environment=(.*)$", text, re.MULTILINE))
        loads({**environment, **{k: v for k, v in fixed.items() if k.startswith("AIGC_IMAGE_")}})


# Compose and the image


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def interpolated(value: str) -> str:
    """Compose's ``${NAME:-default}``, with every variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_stack_has_its_services_and_settings_aigc_image_accepts() -> None:
    services = compose()["services"]
    assert {"postgres", "s3", "api", "worker1", "worker2", "prometheus"} <= set(services)
    assert services["api"]["command"] == ["serve", "--no-worker"]
    for name in ("api", "worker1", "worker2"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Containerfile"
        accepted(service["command"])
        environment = {k: interpolated(str(v)) for k, v in service["environment"].items()}
        loads(environment)
        assert "AIGC_IMAGE_SECRET_KEY" not in environment  # made on first start, kept in the api volume
    # The database user is the owner of its database, as PostgreSQL 15 requires to create the schema.
    database = services["postgres"]["environment"]
    url = interpolated(services["api"]["environment"]["AIGC_IMAGE_DATABASE_URL"])
    assert url.startswith(f"postgresql://{database['POSTGRES_USER']}:") and url.endswith(f"/{database['POSTGRES_DB']}")


def test_prometheus_scrapes_the_api_and_each_worker_of_the_compose_stack() -> None:
    services = compose()["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {target for job in scrape for config in job["static_configs"] for target in config["targets"]}
    expected = {"api:8000"}
    for name, service in services.items():
        if service.get("command", [None])[0] == "worker":
            command = service["command"]
            expected.add(f"{name}:{command[command.index('--metrics-port') + 1]}")
            assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
    assert targets == expected
    mounts = services["prometheus"]["volumes"]
    assert any(mount.startswith("./prometheus.yml:/etc/prometheus/prometheus.yml") for mount in mounts)


def test_the_image_sets_only_settings_aigc_image_accepts() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    block = re.search(r"^ENV (.*?)\n\n", text, re.MULTILINE | re.DOTALL)
    assert block is not None
    pairs = re.findall(r"(\w+)=(\S+)", block.group(1))
    loads({k: v for k, v in pairs if k.startswith("AIGC_IMAGE_")})
    assert re.search(r"^USER aigc$", text, re.MULTILINE)
    assert re.search(r'^HEALTHCHECK .*CMD \["aigc-image-healthcheck"\]$', text, re.MULTILINE)
