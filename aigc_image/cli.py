"""The ``aigc-image`` command: serve, worker, generate, tasks, models, pull, keys, openapi. Parsing and
wiring only: what generate and tasks do is task_commands.py's."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc_image import __version__, logs
from aigc_image import keys as keyfiles
from aigc_image import task_commands as commands
from aigc_image.client import ApiClient, ApiClientError
from aigc_image.config import ConfigError, Settings, check_device, load_settings
from aigc_image.errors import TaskError
from aigc_image.store import StoreError
from aigc_image.task_commands import TASK_STATUSES, Refused

if TYPE_CHECKING:
    from aigc_image.catalog import Catalog
    from aigc_image.store import DefaultModelRecord


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
    gen.add_argument("--model", help="ModelName (default: the server's default model)")
    gen.add_argument("--model-version", help="ModelVersion")
    gen.add_argument("--negative-prompt", help="NegativePrompt")
    gen.add_argument("--count", type=int, help="OutputImageCount")
    gen.add_argument("--aspect-ratio", help="ExtraParameters.AspectRatio, e.g. 16:9")
    gen.add_argument("--resolution", help="ExtraParameters.Resolution: 720P, 1080P, 2K or 4K")
    gen.add_argument("--size", help="AdditionalParameters size, WIDTHxHEIGHT, e.g. 1024x768")
    gen.add_argument("--steps", type=int, help="AdditionalParameters steps (default: the model's)")
    gen.add_argument("--guidance", type=float, help="AdditionalParameters guidance_scale (default: the model's)")
    gen.add_argument("--seed", type=int, help="AdditionalParameters seed, for a reproducible image")
    gen.add_argument("--logo", action="store_true", help="ExtraParameters.LogoAdd = 1: the visible AI-generated mark")
    gen.add_argument("--enhance", action="store_true", help="EnhancePrompt: rewrite the prompt before generating")
    gen.add_argument("--panorama", action="store_true", help="SceneType 3d_panorama: a 2:1 seamless panorama")
    gen.add_argument("--reference", action="append", help="ImageInfos: a reference image URL (repeatable)")
    gen.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the task (default 600)")
    _client_options(gen)

    # `tasks` alone lists; each action on one task is a subcommand.
    tasks = command("tasks", "The key's tasks, through a running server: list them (the default), or show, "
                    "wait for, get, cancel or delete one.", _tasks_list)  # fmt: skip
    _list_options(tasks)
    _client_options(tasks)
    actions = tasks.add_subparsers(metavar="ACTION", title="actions")

    def task_action(name: str, help_text: str, run: object) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
        sub.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="the data dir (its keys.toml)")
        _client_options(sub, default=argparse.SUPPRESS)
        return sub

    _list_options(task_action("list", "List the key's recent tasks, newest first (the default action).", _tasks_list),
                  default=argparse.SUPPRESS)  # fmt: skip
    task_action("show", "Show one task: its state, parameters (seed included), times and image URLs.", _tasks_show)
    wait = task_action("wait", "Wait for a task (one made earlier, e.g. before Ctrl-C), then save its images.",
                       _tasks_wait)  # fmt: skip
    wait.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    get = task_action("get", "Save the images of a finished task.", _tasks_get)
    cancel = task_action("cancel", "Cancel a waiting or running task: it ends FAILED, keeping no image.",
                         _tasks_cancel)  # fmt: skip
    delete = task_action("delete", "Delete a finished or failed task and its images.", _tasks_delete)
    for sub in (actions.choices["show"], wait, get, cancel, delete):
        sub.add_argument("task_id", metavar="TASK_ID")
    for sub in (wait, get):
        sub.add_argument("-o", "--output", type=Path, default=Path("."),
                         help="a folder (default: here; files TASK_ID-N) or a file name (.png or .jpg)")  # fmt: skip

    models = command("models", "List the models: cached or not, memory needed, whether they fit this host.", _models)
    models.add_argument("--set-default", metavar="MODEL",
                        help="make MODEL (Name or Name:Version) the default of the whole deployment")  # fmt: skip
    pull = command("pull", "Download a model's weights into the Hugging Face cache (resumable).", _pull)
    pull.add_argument("model", type=_model_label, help="ModelName or ModelName:ModelVersion, e.g. Hunyuan or Qwen:0925")
    command("openapi", "Print an OpenAPI description of the actions (one pseudo-path per action).", _openapi)

    keys = command("keys", "List API keys, or create one with --create.", _keys)
    keys.add_argument("--create", action="store_true", help="create a new key pair in the data dir")
    return parser


def _client_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--endpoint", default=default,
                        help="server URL (default: public_url, or api.host:api.port of the settings)")  # fmt: skip
    parser.add_argument(
        "--secret-id", default=default, help="SecretId (default: settings, then the data dir's keys.toml)"
    )
    parser.add_argument("--secret-key", default=default, help="SecretKey")


def _list_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--status", choices=sorted(TASK_STATUSES), default=default, help="only tasks in this state")
    parser.add_argument("--limit", type=int, default=20 if default is None else default,
                        help="how many (default 20, at most 100)")  # fmt: skip


def _writable_data_dir(settings: Settings) -> bool:
    """Whether the data dir can be used; if not, say why on one line."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        cause = exc.strerror or str(exc)
        print(f"aigc-image: cannot use the data directory {path}: {cause} "
              "(choose another with --data-dir or AIGC_IMAGE_DATA_DIR)", file=sys.stderr)  # fmt: skip
        return False
    return True


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if not _writable_data_dir(settings):
        return 1
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


def _model_label(value: str) -> Any:
    from aigc_image.catalog import ModelLabel

    try:
        return ModelLabel.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(value: str) -> str:
    try:
        return check_device(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from aigc_image.worker.process import run_worker

    if not _writable_data_dir(settings):
        return 1

    if args.metrics_port is not None:  # a standalone worker's own metrics (serve's children share serve's)
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)

    run_worker(settings, args.device or settings.worker.devices[0], parent_pid=args.parent_pid)
    return 0


def _models(args: argparse.Namespace, settings: Settings) -> int | None:
    from aigc_image.hardware import probe
    from aigc_image.models_view import render
    from aigc_image.wiring import catalog_from

    if args.set_default:
        return _set_default(settings, args.set_default)
    hardware = probe(settings.worker.devices)
    catalog, why = catalog_from(settings, hardware)
    default_label, default_note = _deployment_default(settings, catalog, why)
    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
    sys.stdout.write(render(catalog, hardware, default_label, default_note, width))
    return None


def _deployment_default(settings: Settings, here: Catalog, why: str) -> tuple[str, str]:
    """The default model the servers use (the one their store records for the deployment) and a
    line that says where it comes from; before one is recorded, the one that would be. ``here``:
    the catalogue with this host's choice, ``why`` it."""
    from aigc_image.deployment import describe
    from aigc_image.wiring import catalog_from

    configured, origin = catalog_from(settings)  # without hardware: only a configured default
    try:
        recorded = _recorded_default(settings)
    except StoreError as exc:
        return here.default_label, f"{here.default_label} here, {why}; the deployment's is unknown: {exc}"
    if recorded is not None:
        note = f"{recorded.label}, {describe(recorded)}"
        if configured.default_label and configured.default_label != recorded.label:
            note += (f". This host's {origin} names {configured.default_label}: processes started with it refuse "
                     "to start (`aigc-image models --set-default` changes the deployment's)")  # fmt: skip
        return recorded.label, note
    if configured.default_label:
        return configured.default_label, f"{configured.default_label}, {origin} (recorded for every process at start)"
    return here.default_label, (f"none recorded yet: the first worker to start chooses the best model for its "
                                f"hardware; here that is {here.default_label}, {why}")  # fmt: skip


def _recorded_default(settings: Settings) -> DefaultModelRecord | None:
    """What the deployment's store records, without creating a database that does not exist yet."""
    from aigc_image.clock import SystemClock
    from aigc_image.store import open_store

    url = settings.resolved_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    store = open_store(url, SystemClock())
    try:
        return store.default_model()
    finally:
        store.close()


def _set_default(settings: Settings, label: str) -> int:
    import socket

    from aigc_image.clock import SystemClock
    from aigc_image.deployment import REFRESH_SECONDS, describe, set_default
    from aigc_image.store import open_store
    from aigc_image.wiring import catalog_from

    catalog, _ = catalog_from(settings)
    store = open_store(settings.resolved_database_url, SystemClock())
    try:
        before = store.default_model()
        who = f"{os.environ.get('USER') or 'someone'} on {socket.gethostname()}"
        record = set_default(store, catalog, label, who, time.time())
    finally:
        store.close()
    print(f"The deployment's default model is now {record.label} (it was {before.label if before else 'none'}), "
          f"{describe(record)}.")  # fmt: skip
    print(f"Running API processes use it within {REFRESH_SECONDS:.0f} s. Set models.default_model = "
          f"\"{record.label}\" wherever it names another model: processes that disagree refuse to start.")  # fmt: skip
    return 0


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from aigc_image import weights
    from aigc_image.wiring import catalog_from

    catalog, _ = catalog_from(settings)
    entry = catalog.lookup(args.model)
    if not weights.sources(entry) or all(weights.is_local(s) for s in weights.sources(entry)):
        print(f"{entry.label} needs no download ({entry.source or 'built in'}).")
        return 0
    print(f"Pulling {entry.label} ({', '.join(weights.sources(entry))}, about {entry.download_gb:g} GB).", flush=True)
    try:
        for repo in weights.pull(entry):
            print(f"{repo}: in the Hugging Face cache")
    except Exception as exc:  # the Hub's errors have no common base: say the root cause on one line
        print(f"aigc-image: cannot download {entry.label}: {weights.download_failure(exc)}", file=sys.stderr)
        return 1
    return 0


def _openapi(args: argparse.Namespace, settings: Settings) -> None:
    from aigc_image.protocol.openapi import openapi_description

    print(json.dumps(openapi_description(endpoint_of(settings)), indent=2))


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from aigc_image.keys import KeyRing

    if args.create:
        if not _writable_data_dir(settings):
            return 1
        pair = keyfiles.new_key_pair()
        path = keyfiles.add_key(settings.data_dir, pair)
        print(f"created in {path}:\n  SecretId:  {pair.secret_id}\n  SecretKey: {pair.secret_key}")
        print(f"Running servers with this data dir accept it within {KeyRing.CHECK_SECONDS:.0f} s, without a restart "
              f"(and refuse it within {KeyRing.CHECK_SECONDS:.0f} s of its removal from {path.name}).")  # fmt: skip
        return 0
    known = keyfiles.all_keys(settings)
    if not known:
        print(f"no API keys: none in the settings or in {settings.data_dir / 'keys.toml'}; "
              "`aigc-image keys --create` makes one (serve makes one on its first start)")  # fmt: skip
    for secret_id in known:
        print(secret_id)
    return 0


def _client(args: argparse.Namespace, settings: Settings) -> ApiClient | None:
    """A signed client for the endpoint and key the options name, or the settings' (None: no key)."""
    secret_id, secret_key = getattr(args, "secret_id", None), getattr(args, "secret_key", None)
    if not (secret_id and secret_key):
        known = keyfiles.all_keys(settings)
        if not known:
            print("aigc-image: no API key: pass --secret-id/--secret-key or set AIGC_IMAGE_SECRET_ID/KEY",
                  file=sys.stderr)  # fmt: skip
            return None
        secret_id, secret_key = next(iter(known.items()))
    return ApiClient(getattr(args, "endpoint", None) or endpoint_of(settings), secret_id, secret_key)


def _remote(client: ApiClient, work: Callable[[], object]) -> int:
    """Run ``work`` against the server; a refusal or a failed call is one line on stderr."""
    try:
        result = work()
    except Refused as exc:
        print(f"aigc-image: {exc}", file=sys.stderr)
        return 1
    except ApiClientError as exc:
        print(f"aigc-image: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aigc-image: cannot reach {client.endpoint}: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, list):  # saved images: their paths, one a line, for scripts
        for path in result:
            print(path)
    elif isinstance(result, str):
        print(result)
    return 0


def endpoint_of(settings: Settings) -> str:
    """Where this host's server answers, by the settings (``--config``, the data dir, the environment)."""
    if settings.public_url:
        return settings.public_url
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.api.host, settings.api.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}"


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    if args.output.suffix.lower() not in commands.IMAGE_SUFFIXES:
        print(f"aigc-image: cannot write {args.output.name!r}: name the output .png, .jpg or .jpeg", file=sys.stderr)
        return 2
    client = _client(args, settings)
    if client is None:
        return 2
    return _remote(client, lambda: commands.generate(client, _create_request(args), args.output, args.timeout))


def _tasks_list(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    return 2 if client is None else _remote(client, lambda: commands.list_tasks(client, args.status, args.limit))


def _tasks_show(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    return 2 if client is None else _remote(client, lambda: commands.show(client, args.task_id))


def _tasks_wait(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    if client is None:
        return 2
    return _remote(client, lambda: commands.wait(client, args.task_id, args.output, args.timeout))


def _tasks_get(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    return 2 if client is None else _remote(client, lambda: commands.get(client, args.task_id, args.output))


def _tasks_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    return 2 if client is None else _remote(client, lambda: commands.cancel(client, args.task_id))


def _tasks_delete(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(args, settings)
    return 2 if client is None else _remote(client, lambda: commands.delete(client, args.task_id))


def _create_request(args: argparse.Namespace) -> dict[str, object]:
    """The CreateAigcImageTask parameters the options name; the output file's suffix picks the format."""
    extra: dict[str, object] = {
        "OutputFormat": "jpeg" if args.output.suffix.lower() in (".jpg", ".jpeg") else None,
        "AspectRatio": args.aspect_ratio,
        "Resolution": args.resolution,
        "LogoAdd": 1 if args.logo else None,
    }
    additional = {"seed": args.seed, "steps": args.steps, "guidance_scale": args.guidance, "size": args.size}
    additional = {k: v for k, v in additional.items() if v is not None}
    request: dict[str, object] = {
        "Prompt": args.prompt,
        "ModelName": args.model,
        "ModelVersion": args.model_version,
        "NegativePrompt": args.negative_prompt,
        "OutputImageCount": args.count,
        "EnhancePrompt": True if args.enhance else None,
        "SceneType": "3d_panorama" if args.panorama else None,
        "ImageInfos": [{"ImageUrl": url} for url in args.reference] if args.reference else None,
        "AdditionalParameters": json.dumps(additional) if additional else None,
        "ExtraParameters": {k: v for k, v in extra.items() if v is not None} or None,
    }
    return {k: v for k, v in request.items() if v is not None}
