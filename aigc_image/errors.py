"""What can go wrong with a task, in the service's own terms; no protocol Codes here.

The catalogue, the engines, the fetcher, the storage and the worker raise these. The protocol
layer translates the ones a request can cause into wire errors (protocol/errors.py); the worker
turns the ones a running task meets into its ``FAIL`` message. Each error says whether trying
again could help: ``permanent`` errors end a task at once, anything else is retried with backoff
(worker/retry.py reads only this marker).

    TaskError
    ├── UnknownModel        a ModelName/ModelVersion the catalogue does not serve   (permanent)
    ├── NotSupported        the model cannot do what the task asks                  (permanent)
    ├── ModelUnavailable    the model's weights cannot be loaded                    (permanent)
    ├── ContentRefused      content review refused an input or output image        (permanent)
    ├── OutOfMemory         the device ran out of memory generating the task        (permanent)
    └── TaskTimeout         generation ran past worker.task_timeout                 (permanent)

Errors of other modules carry the same marker: a refused reference-image URL
(``fetch.FetchRefused``) or a bucket that says no (``storage.StorageRefused``) are permanent.
"""

from __future__ import annotations


class TaskError(Exception):
    """Something that keeps a task from completing; ``str()`` is the message its client sees."""

    permanent = False


def is_permanent(error: BaseException) -> bool:
    """Whether retrying the task cannot help (the error class says so)."""
    return bool(getattr(error, "permanent", False))


class UnknownModel(TaskError):
    permanent = True


class NotSupported(TaskError):
    permanent = True


class ModelUnavailable(TaskError):
    permanent = True


class ContentRefused(TaskError):
    permanent = True


class OutOfMemory(TaskError):
    permanent = True


class TaskTimeout(TaskError):
    permanent = True
