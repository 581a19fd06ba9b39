"""The ``aigc-image`` command: serve, worker, generate, models, keys. Wiring only."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc_image import __version__, logs
from aigc_image import keys as keyfiles
from aigc_image.config import ConfigError, Settings, check_device, load_settings
from aigc_image.errors import TaskError
from aigc_image.store import StoreError

if TYPE_CHECKING:  # imported where used: the client signs with protocol/, which worker processes never load
    from aigc_image.client import ApiClient, ApiClientError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure()
    try:
        settings = load_settings(args.config).with_overrides(
            data_dir=getattr(args, "data_dir", None),
            **{"api.host": getattr(args, "host", None), "api.port": getattr(args, "port", None)},
        )
        logs.configure(settings.log.format, settings.log.level)
        return int(args.run(args, settings) or 0)
    except ConfigError as exc:
        print(f"aigc-image: configuration error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, TaskError) as exc:
        print(f"aigc-image: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `aigc-image models | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigc-image", description="Self-hosted Tencent Cloud MPS AIGC image API.")
    parser.add_argument("--version", action="version", version=f"aigc-image {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help_text: str, run: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", type=Path, help="TOML settings file (see docs/configuration.md)")
        sub.add_argument("--data-dir", type=Path, help="directory for the database, keys and images")
        sub.set_defaults(run=run)
        return sub

    serve = command("serve", "Run the API server with a built-in worker.", _serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000; 0 picks a free one)")
    serve.add_argument("--no-worker", action="store_true", help="run the API only; workers run elsewhere")

    worker = command("worker", "Run a worker against the configured task store.", _worker)
    worker.add_argument(
        "--device", type=_device,
        help="cpu, cuda or cuda:N: the one device this worker uses (default: the first of worker.devices)",
    )  # fmt: skip
    worker.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # set by `serve` for its child

    gen = command("generate", "Generate images through a running server and save them.", _generate)
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="file to write (default out.png)")
    gen.add_argument("--endpoint", help="server URL (default: public_url, or api.host:api.port of the settings)")
    gen.add_argument("--model", help="ModelName (default: the server's default model)")
    gen.add_argument("--model-version", help="ModelVersion")
    gen.add_argument("--negative-prompt", help="NegativePrompt")
    gen.add_argument("--count", type=int, help="OutputImageCount")
    gen.add_argument("--aspect-ratio", help="ExtraParameters.AspectRatio, e.g. 16:9")
    gen.add_argument("--resolution", help="ExtraParameters.Resolution: 720P, 1080P, 2K or 4K")
    gen.add_argument("--logo", action="store_true", help="ExtraParameters.LogoAdd = 1: the visible AI-generated mark")
    gen.add_argument("--seed", type=int, help="AdditionalParameters seed, for a reproducible image")
    gen.add_argument("--enhance", action="store_true", help="EnhancePrompt: rewrite the prompt before generating")
    gen.add_argument("--panorama", action="store_true", help="SceneType 3d_panorama: a 2:1 seamless panorama")
    gen.add_argument("--reference", action="append", help="ImageInfos: a reference image URL (repeatable)")
    gen.add_argument("--secret-id", help="SecretId (default: settings, then the data dir's keys.toml)")
    gen.add_argument("--secret-key", help="SecretKey")
    gen.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the task")

    tasks = command("tasks", "List the key's recent tasks, newest first, through a running server.", _tasks)
    tasks.add_argument("--status", choices=sorted(TASK_STATUSES), help="only tasks in this state")
    tasks.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 100)")
    tasks.add_argument("--endpoint", help="server URL (default: public_url, or api.host:api.port of the settings)")
    tasks.add_argument("--secret-id", help="SecretId (default: settings, then the data dir's keys.toml)")
    tasks.add_argument("--secret-key", help="SecretKey")

    command("models", "List the models: cached or not, memory needed, whether they fit this host.", _models)
    pull = command("pull", "Download a model's weights into the Hugging Face cache (resumable).", _pull)
    pull.add_argument("model", help="ModelName or ModelName:ModelVersion, e.g. Hunyuan or Qwen:0925")
    command("openapi", "Print an OpenAPI description of the actions (one pseudo-path per action).", _openapi)

    keys = command("keys", "List API keys, or create one with --create.", _keys)
    keys.add_argument("--create", action="store_true", help="create a new key pair in the data dir")
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # The API and its worker children share one directory of metrics files (metrics.py); it must
    # be set before anything imports prometheus_client, so here, first. Each serve has its own.
    metrics_dir = settings.data_dir / "metrics" / str(os.getpid())
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from aigc_image.serve import serve

    try:
        serve(settings, with_worker=not args.no_worker, config_file=args.config)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"aigc-image: cannot listen on {settings.api.host}:{settings.api.port}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _device(value: str) -> str:
    try:
        return check_device(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    from aigc_image.worker.process import run_worker

    if args.metrics_port is not None:  # a standalone worker's own metrics (serve's children share serve's)
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)

    run_worker(settings, args.device or settings.worker.devices[0], parent_pid=args.parent_pid)


def _models(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    from aigc_image import weights
    from aigc_image.hardware import probe
    from aigc_image.wiring import catalog_from

    hardware = probe(settings.worker.devices)
    catalog, why = catalog_from(settings, hardware)
    table = Table(title=f"Models, best first, on this host ({hardware.describe()})", title_justify="left")
    accelerated = any(entry.accelerations for entry in catalog.entries.values())
    for column in ("Model", "Pipeline", "Native", "Steps", "Weights", "Needs", "Fits"):
        table.add_column(column, no_wrap=column in ("Model", "Native"))
    if accelerated:
        table.add_column("Accelerations")
    for entry in catalog.entries.values():
        state = weights.status(entry)
        if state.where == "built in":
            stored = "built in"
        elif state.present:
            stored = f"{'cached' if state.where != 'local folder' else 'folder'}, {_gb(state.size_bytes)}"
        else:
            stored = f"not cached, {entry.download_gb:g} GB" if entry.download_gb else "not cached"
        need = entry.memory_gb if hardware.kind == "cuda" else entry.cpu_memory_gb
        needs = f"{need:g} GB {'GPU' if hardware.kind == 'cuda' else 'RAM'}" if need else "a GPU"
        fits = "yes" if entry.fits(hardware) else ("offloaded" if hardware.kind == "cuda" else "no")
        mark = " *" if entry.label == catalog.default_label else ""
        pipeline = entry.pipeline.removesuffix("Pipeline") if entry.engine == "diffusers" else "(in code)"
        row = [f"{entry.label}{mark}", pipeline, f"{entry.width}×{entry.height}", str(entry.steps), stored, needs, fits]
        table.add_row(*row, *([", ".join(entry.accelerations) or "none"] if accelerated else []))
    console = Console()
    console.print(table)
    console.print(f"* default model: {catalog.default_label}, {why}", soft_wrap=True)
    if not accelerated:
        console.print("accelerations (compile, cache, channels_last): none on; see docs/models.md", soft_wrap=True)


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from aigc_image import weights
    from aigc_image.wiring import catalog_from

    catalog, _ = catalog_from(settings)
    name, _, version = args.model.partition(":")
    entry = catalog.resolve(name, version or None)
    if not weights.sources(entry) or all(weights.is_local(s) for s in weights.sources(entry)):
        print(f"{entry.label} needs no download ({entry.source or 'built in'}).")
        return 0
    print(f"Pulling {entry.label} ({', '.join(weights.sources(entry))}, about {entry.download_gb:g} GB).")
    for repo in weights.pull(entry):
        print(f"{repo}: in the Hugging Face cache")
    return 0


def _openapi(args: argparse.Namespace, settings: Settings) -> None:
    from aigc_image.protocol.openapi import openapi_description

    print(json.dumps(openapi_description(endpoint_of(settings)), indent=2))


def _keys(args: argparse.Namespace, settings: Settings) -> None:
    if args.create:
        pair = keyfiles.new_key_pair()
        path = keyfiles.add_key(settings.data_dir, pair)
        print(f"created in {path}:\n  SecretId:  {pair.secret_id}\n  SecretKey: {pair.secret_key}")
        return
    known = keyfiles.all_keys(settings)
    if not known:
        print(f"no API keys: none in the settings or in {settings.data_dir / 'keys.toml'}; "
              "`aigc-image keys --create` makes one (serve makes one on its first start)")  # fmt: skip
    for secret_id in known:
        print(secret_id)


OUTPUT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def _client(args: argparse.Namespace, settings: Settings) -> ApiClient | None:
    """A signed client for the endpoint and key the options name, or the settings' (None: no key)."""
    from aigc_image.client import ApiClient

    secret_id, secret_key = args.secret_id, args.secret_key
    if not (secret_id and secret_key):
        known = keyfiles.all_keys(settings)
        if not known:
            print("aigc-image: no API key: pass --secret-id/--secret-key or set AIGC_IMAGE_SECRET_ID/KEY",
                  file=sys.stderr)  # fmt: skip
            return None
        secret_id, secret_key = next(iter(known.items()))
    return ApiClient(args.endpoint or endpoint_of(settings), secret_id, secret_key)


def _failed(client: ApiClient, exc: ApiClientError | OSError) -> int:
    """Say why a call failed, on one line, and give the exit status."""
    from aigc_image.client import ApiClientError

    if isinstance(exc, ApiClientError):
        print(f"aigc-image: {exc.code}: {exc.message}", file=sys.stderr)
    else:
        print(f"aigc-image: cannot reach {client.endpoint}: {exc}", file=sys.stderr)
    return 1


def endpoint_of(settings: Settings) -> str:
    """Where this host's server answers, by the settings (``--config``, the data dir, the environment)."""
    if settings.public_url:
        return settings.public_url
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.api.host, settings.api.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}"


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from aigc_image.client import ApiClientError

    suffix = args.output.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        print(f"aigc-image: cannot write {args.output.name!r}: name the output .png, .jpg or .jpeg", file=sys.stderr)
        return 2
    client = _client(args, settings)
    if client is None:
        return 2
    try:
        task_id = client.call("CreateAigcImageTask", _create_request(args))["TaskId"]
        reply = _wait(client, task_id, args.timeout)
    except (ApiClientError, OSError) as exc:
        return _failed(client, exc)
    if reply["Status"] != "DONE":
        print(f"aigc-image: task {task_id} {reply['Status']}: {reply.get('Message', '')}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for index, url in enumerate(reply["ImageUrls"]):
        path = args.output if index == 0 else args.output.with_stem(f"{args.output.stem}-{index}")
        path.write_bytes(client.download(url))
        print(path)
    return 0


TASK_STATUSES = {"waiting": "PENDING", "running": "RUNNING", "done": "FINISHED", "failed": "FAILED"}


def _tasks(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from aigc_image.client import ApiClientError

    client = _client(args, settings)
    if client is None:
        return 2
    params: dict[str, Any] = {"PageNum": 1, "PageSize": max(1, min(args.limit, 100))}
    if args.status:
        params["QueryTaskFilter"] = {"TaskStatus": TASK_STATUSES[args.status]}
    try:
        reply = client.call("DescribeAigcTaskList", params)
    except (ApiClientError, OSError) as exc:
        return _failed(client, exc)
    if not reply["Tasks"]:
        print("no tasks" + (f" {args.status}" if args.status else "") + " for this key")
        return 0
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    console = Console(width=200 if piped else None)  # piped: nothing cut to 80 columns
    title = f"{len(reply['Tasks'])} of {reply['Total']} tasks, newest first"
    rows = []
    for task in reply["Tasks"]:
        body = json.loads(task["RequestBody"] or "{}")
        rows.append((task["TaskId"], task["TaskStatus"], f"{body.get('ModelName')}:{body.get('ModelVersion')}",
                     task["CreateTime"], str(len(task["Urls"])), body.get("Prompt", "")))  # fmt: skip
    if console.width < 120:  # a table would cut the ids: two lines a task instead
        console.print(title, highlight=False)
        for task_id, status, model, created, images, prompt in rows:
            console.print(f"{task_id}  {status}  {model}\n  {created} · {images} image(s) · {prompt}",
                          markup=False, highlight=False)  # fmt: skip
        return 0
    table = Table(title=title, title_justify="left")
    for column in ("TaskId", "Status", "Model", "Created (UTC+8)", "Images", "Prompt"):
        table.add_column(column, no_wrap=column != "Prompt")
    for row in rows:
        table.add_row(*(Text(value) for value in row))  # a prompt's "[...]" is text, not rich markup
    console.print(table)
    return 0


def _create_request(args: argparse.Namespace) -> dict[str, object]:
    """The CreateAigcImageTask parameters the options name; the output file's suffix picks the format."""
    extra: dict[str, object] = {
        "OutputFormat": "jpeg" if args.output.suffix.lower() in (".jpg", ".jpeg") else None,
        "AspectRatio": args.aspect_ratio,
        "Resolution": args.resolution,
        "LogoAdd": 1 if args.logo else None,
    }
    request: dict[str, object] = {
        "Prompt": args.prompt,
        "ModelName": args.model,
        "ModelVersion": args.model_version,
        "NegativePrompt": args.negative_prompt,
        "OutputImageCount": args.count,
        "EnhancePrompt": True if args.enhance else None,
        "SceneType": "3d_panorama" if args.panorama else None,
        "ImageInfos": [{"ImageUrl": url} for url in args.reference] if args.reference else None,
        "AdditionalParameters": json.dumps({"seed": args.seed}) if args.seed is not None else None,
        "ExtraParameters": {k: v for k, v in extra.items() if v is not None} or None,
    }
    return {k: v for k, v in request.items() if v is not None}


def _wait(client: ApiClient, task_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the task finishes, with a progress bar of its steps (TaskInfo) on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from aigc_image.client import ApiClientError

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    started = time.monotonic()
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"{task_id} queued", total=None)
        while True:
            status = client.call("DescribeAigcTaskStatus", {"TaskId": task_id})
            info = json.loads(status.get("TaskInfo") or "{}")
            state = {"PENDING": "queued", "RUNNING": "generating"}.get(status["TaskStatus"], "finishing")
            progress.update(bar, description=f"{task_id} {state}", total=info.get("steps") or None,
                            completed=info.get("step", 0))  # fmt: skip
            if status["TaskStatus"] in ("FINISHED", "FAILED"):
                return client.call("DescribeAigcImageTask", {"TaskId": task_id})
            if time.monotonic() - started > timeout:
                raise ApiClientError("Timeout", f"task {task_id} did not finish within {timeout:.0f} s")
            time.sleep(0.25)
