"""What ``aigc-image generate`` and ``aigc-image tasks`` do through a running server: create a
task, follow its place in the queue and then its steps, list the key's tasks, show one, save its
images, cancel or delete one.

Everything goes through the public API with a signed client (client.py), as any SDK would.
What a person reads about the task (its id, seed, progress) goes to stderr; the paths of the
saved images go to stdout, one a line, for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aigc_image.client import ApiClient, ApiClientError

TASK_STATUSES = {"waiting": "PENDING", "running": "RUNNING", "done": "FINISHED", "failed": "FAILED"}
IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
API_TIME_ZONE = timezone(timedelta(hours=8))  # the API writes times in UTC+8, as MPS does
POLL_SECONDS = 0.25


class Refused(Exception):
    """What the person asked for cannot be done (a task not finished, a wrong file name); the message says why."""


# -- creating and following ---------------------------------------------------------------------


def generate(client: ApiClient, request: dict[str, Any], output: Path, timeout: float) -> list[Path]:
    """Create the task, follow it to its end and save its images as ``output`` (and output-1, ...)."""
    task_id = client.call("CreateAigcImageTask", request)["TaskId"]
    reply = follow(client, task_id, timeout)
    return save(client, task_id, reply["ImageUrls"], output)


def follow(client: ApiClient, task_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the task ends, on stderr: how many tasks are ahead of it while it waits, then a
    progress bar of its steps. The task's DescribeAigcImageTask reply once DONE; Refused if it failed."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True, highlight=False)
    # Two columns are left free for the terminal's "^C" echo: on a line of the full width it wrapped,
    # and the bar, no longer where rich put it, stayed on the screen above the Ctrl-C message.
    console.width = max(console.width - 2, 40)
    # The task id is printed once, above the bar: in the bar it left no room for the steps at 80 columns.
    # While the task waits the bar pulses and the steps column is empty (its total is unknown).
    columns = (TextColumn("{task.description:<10}"), BarColumn(bar_width=None), TextColumn("{task.fields[steps]}"),
               TimeRemainingColumn())  # fmt: skip
    started = time.monotonic()
    introduced = False
    try:
        with Progress(*columns, console=console, transient=True, expand=False) as progress:
            bar = progress.add_task("waiting", total=None, steps="")
            while True:
                status = client.call("DescribeAigcTaskStatus", {"TaskId": task_id})
                if not introduced:
                    progress.console.print(introduction(status), markup=False, soft_wrap=True)
                    introduced = True
                info = json.loads(status.get("TaskInfo") or "{}")
                if status["TaskStatus"] == "PENDING":
                    progress.update(bar, description=waiting(info))
                else:
                    step, steps = info.get("step", 0), info.get("steps") or 0
                    shown = f"{step:>{len(str(steps))}}/{steps} steps  ETA" if steps else ""
                    progress.update(bar, description="generating", total=steps or None, completed=step, steps=shown)
                if status["TaskStatus"] in ("FINISHED", "FAILED"):
                    break
                if time.monotonic() - started > timeout:
                    raise ApiClientError("Timeout", f"task {task_id} did not finish within {timeout:.0f} s; "
                                         f"`aigc-image tasks wait {task_id}` waits again")  # fmt: skip
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print(f"stopped waiting; the task goes on. To wait for it again, or to stop it:\n"
              f"  aigc-image tasks wait {task_id}\n  aigc-image tasks cancel {task_id}", file=sys.stderr)  # fmt: skip
        raise
    reply = client.call("DescribeAigcImageTask", {"TaskId": task_id})
    if reply["Status"] != "DONE":
        raise Refused(f"task {task_id} failed: {reply.get('Message') or 'no reason given'}")
    return reply


def waiting(info: dict[str, Any]) -> str:
    """A waiting task's place in the queue, from its TaskInfo (``tasks_ahead``: by the fair order)."""
    ahead = info.get("tasks_ahead")
    if ahead is None:  # a server without queue positions
        return "waiting"
    return f"waiting, {queue_position(ahead)}"


def queue_position(ahead: int) -> str:
    return "next in line" if ahead == 0 else f"{ahead} task{'' if ahead == 1 else 's'} ahead"


def introduction(status: dict[str, Any]) -> str:
    """The task's id, and on a second line what it makes (the seed, to make it again)."""
    body = json.loads(status.get("RequestBody") or "{}")
    extra = json.loads(body.get("AdditionalParameters") or "{}")
    parts = [f"{body.get('ModelName')}:{body.get('ModelVersion')}"]
    parts += [f"seed {extra['seed']}"] if extra.get("seed") is not None else []
    parts += [f"{extra['size']}"] if extra.get("size") else []
    parts += [f"{extra['steps']} steps"] if extra.get("steps") else []
    return f"task {status['TaskId']}\n  " + " · ".join(parts)


# -- one task -----------------------------------------------------------------------------------


def status_of(client: ApiClient, task_id: str) -> dict[str, Any]:
    return client.call("DescribeAigcTaskStatus", {"TaskId": task_id})


def show(client: ApiClient, task_id: str) -> str:
    """A task as a few labelled lines: state, parameters, times, images or why it failed."""
    status = status_of(client, task_id)
    body = json.loads(status.get("RequestBody") or "{}")
    extra = json.loads(body.get("AdditionalParameters") or "{}")
    info = json.loads(status.get("TaskInfo") or "{}")
    state = status["TaskStatus"]
    if state == "RUNNING" and info.get("steps"):
        state += f", step {info.get('step', 0)} of {info['steps']}"
    if state == "PENDING" and info.get("tasks_ahead") is not None:
        state += f", {queue_position(info['tasks_ahead'])}"
    guidance = extra.get("guidance_scale")
    lines = [
        ("Task", status["TaskId"]),
        ("Status", state),
        ("Model", f"{body.get('ModelName')}:{body.get('ModelVersion')}"),
        ("Prompt", body.get("EnhancedPrompt") or body.get("Prompt") or ""),
        *([("Negative", body["NegativePrompt"])] if body.get("NegativePrompt") else []),
        ("Seed", str(extra.get("seed", ""))),
        ("Size", f"{extra.get('size', '')} · {extra.get('steps', '?')} steps · guidance "
                 f"{guidance if guidance is not None else 'the model default'}"),
    ]  # fmt: skip
    for name, key in (("Created", "CreateTime"), ("Started", "ScheduledTime"), ("Finished", "FinishedTime")):
        if status.get(key):
            lines.append((name, local_time(status[key])))
    if status["TaskStatus"] == "FAILED":
        lines.append(("Failed", status.get("TaskResultMsg") or "no reason given"))
    if status["TaskStatus"] == "FINISHED":
        reply = client.call("DescribeAigcImageTask", {"TaskId": task_id})
        lines += [("Image", url) for url in reply.get("ImageUrls") or []]
    return "\n".join(f"{name + ':':<10}{value}" for name, value in lines)


def wait(client: ApiClient, task_id: str, output: Path, timeout: float) -> list[Path]:
    reply = follow(client, task_id, timeout)
    return save(client, task_id, reply["ImageUrls"], output)


def cancel(client: ApiClient, task_id: str) -> str:
    """Cancel a waiting or running task of the key (CancelAigcImageTask); it ends FAILED, reason cancelled.
    Cancelling a cancelled task answers the same; a finished one is FailedOperation.TaskFinished."""
    client.call("CancelAigcImageTask", {"TaskId": task_id})
    return f"task {task_id} cancelled"


def delete(client: ApiClient, task_id: str) -> str:
    """Delete a finished task of the key and its images in the server's storage (DeleteAigcImageTask)."""
    try:
        client.call("DeleteAigcImageTask", {"TaskId": task_id})
    except ApiClientError as exc:
        if exc.code != "FailedOperation.TaskNotFinished":
            raise
        # The server names its API action; a person at this prompt needs the command.
        raise ApiClientError(exc.code, f"task {task_id} has not finished: `aigc-image tasks cancel {task_id}` "
                             "stops it, then delete it", exc.request_id) from None  # fmt: skip
    return f"task {task_id} deleted"


def get(client: ApiClient, task_id: str, output: Path) -> list[Path]:
    """Save a finished task's images; a task not finished is refused with what it is doing."""
    reply = client.call("DescribeAigcImageTask", {"TaskId": task_id})
    if reply["Status"] == "FAIL":
        raise Refused(f"task {task_id} failed: {reply.get('Message') or 'no reason given'}")
    if reply["Status"] != "DONE":
        state = "waiting" if reply["Status"] == "WAIT" else "running"
        raise Refused(f"task {task_id} is still {state}: `aigc-image tasks wait {task_id}` waits for it")
    return save(client, task_id, reply["ImageUrls"], output)


def save(client: ApiClient, task_id: str, urls: list[str], output: Path) -> list[Path]:
    """Write the images: ``output`` a file name (.png, .jpg), the first image there and the others
    beside it as NAME-1, NAME-2...; else a folder, with files named TASK_ID-N."""
    suffixes = [Path(urlsplit(url).path).suffix.lower() or ".png" for url in urls]
    if output.suffix.lower() in IMAGE_SUFFIXES:
        actual = {IMAGE_SUFFIXES.get(suffix, suffix) for suffix in suffixes}
        if actual and actual != {IMAGE_SUFFIXES[output.suffix.lower()]}:
            raise Refused(f"task {task_id}'s images are {', '.join(sorted(actual)).upper()}: name the output "
                          f"{'.jpg' if 'jpeg' in actual else '.png'}, or a folder")  # fmt: skip
        paths = [output if index == 0 else output.with_stem(f"{output.stem}-{index}") for index in range(len(urls))]
    else:
        paths = [output / f"{task_id}-{index}{suffix}" for index, suffix in enumerate(suffixes)]
    for path, url in zip(paths, urls, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download(url))
    return paths


# -- the key's tasks ----------------------------------------------------------------------------


def list_tasks(client: ApiClient, status: str | None, limit: int) -> None:
    """The key's recent tasks, newest first: a table, or two lines a task where a table would cut the ids."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    params: dict[str, Any] = {"PageNum": 1, "PageSize": max(1, min(limit, 100))}
    if status:
        params["QueryTaskFilter"] = {"TaskStatus": TASK_STATUSES[status]}
    reply = client.call("DescribeAigcTaskList", params)
    if not reply["Tasks"]:
        print("no tasks" + (f" {status}" if status else "") + " for this key")
        return
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    console = Console(width=200 if piped else None)  # piped: nothing cut to 80 columns
    title = f"{len(reply['Tasks'])} of {reply['Total']} tasks, newest first"
    rows = []
    for task in reply["Tasks"]:
        body = json.loads(task["RequestBody"] or "{}")
        rows.append((task["TaskId"], task["TaskStatus"], f"{body.get('ModelName')}:{body.get('ModelVersion')}",
                     local_time(task["CreateTime"]), str(len(task["Urls"])), body.get("Prompt", "")))  # fmt: skip
    if console.width < 120:  # a table would cut the ids: two lines a task instead
        console.print(title, highlight=False)
        for task_id, state, model, created, images, prompt in rows:
            console.print(f"{task_id}  {state}  {model}\n  {created} · {images} image(s) · {prompt}",
                          markup=False, highlight=False)  # fmt: skip
        return
    table = Table(title=title, title_justify="left")
    for column in ("TaskId", "Status", "Model", "Created", "Images", "Prompt"):
        table.add_column(column, no_wrap=column != "Prompt")
    for row in rows:
        table.add_row(*(Text(value) for value in row))  # a prompt's "[...]" is text, not rich markup
    console.print(table)


def local_time(api_time: str) -> str:
    """An API time (UTC+8, as MPS writes them) in this computer's time zone, with the zone's name."""
    if not api_time:
        return ""
    moment = datetime.strptime(api_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=API_TIME_ZONE).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
