"""Logging for every process: one line per event, as text or as JSON (``log.format``).

In JSON each line is one object: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
and ``request_id`` / ``task_id`` when the event concerns one (passed as ``extra`` by the code
that logs it), plus ``error`` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

from aigc_image.config import LogFormat, LogLevel

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("request_id", "task_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in CONTEXT if hasattr(record, name)})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: LogFormat = LogFormat.TEXT, level: LogLevel = LogLevel.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value)
    # transformers, diffusers and torchao warn at import about optional packages (torchvision,
    # triton, CUDA kernels built for other Pythons) and deprecations inside PyTorch; their errors
    # still show.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for noisy in ("transformers", "diffusers", "jieba", "torchao", "torch.utils._pytree"):  # with their children
        logging.getLogger(noisy).setLevel(logging.ERROR)
