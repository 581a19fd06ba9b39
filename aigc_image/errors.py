"""The service's own errors, under one root; no protocol Codes here.

Every error a module of the service raises on purpose is a ``ServiceError``. Its class says two
things, and nothing reads them any other way:

* ``permanent``: trying again cannot help. A task that meets a permanent error fails at once;
  anything else is retried with backoff until its attempts run out (worker/retry.py).
* ``reason``: a short code for what went wrong, stored with a task that ends ``FAIL`` (beside its
  message) and read by the faces and the metrics instead of the message's text.

    ServiceError                                                permanent  reason
    ├── TaskError           keeps a task from completing; str() is the message its client sees
    │   ├── UnknownModel    a ModelName/ModelVersion not served here    yes  unknown_model
    │   ├── NotSupported    the model cannot do what the task asks     yes  not_supported
    │   ├── ModelUnavailable  the model's weights cannot be loaded     yes  model_unavailable
    │   ├── ContentRefused  content review refused an input or output  yes  content_refused
    │   │   └── UnreviewedContent  the review could not run: refused   yes  review_unavailable
    │   ├── OutOfMemory     the device ran out of memory               yes  out_of_memory
    │   └── TaskTimeout     generation ran past worker.task_timeout    yes  timeout
    ├── FetchRefused        fetch/: a reference image cannot be used   yes  bad_reference
    ├── FetchFailed         fetch/: the fetch did not work this time   no   reference_unreachable
    │   └── FetchTimeSpent  worker/references.py: fetch.max_total_seconds spent  yes  reference_unreachable
    ├── ReviewUnavailable   moderation/: the review could not run      no   review_unavailable
    ├── StorageRefused      results/: the storage said no              yes  storage_refused
    │   └── UserBucketsDisabled  StoreCosParam without credentials     yes  storage_refused
    ├── StoreError          store/: the task store cannot be used      no   store_unavailable
    │   └── StoreUnavailable     the database did not answer           no   store_unavailable
    ├── ActiveTaskLimit     store/: the key has as many tasks as it may  yes  task_limit
    └── ConfigError         config.py: an invalid setting              yes  config

Each error is defined beside the code that raises it; this module holds the root, the reasons and
the task errors that several layers raise. An exception that is not a ``ServiceError`` is a bug or
an outage nobody named: transient, reason ``internal``.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Reason(enum.StrEnum):
    """Why a task ended ``FAIL``: stored with it, shown to operators, mapped to replies by the faces."""

    UNKNOWN_MODEL = "unknown_model"
    NOT_SUPPORTED = "not_supported"
    MODEL_UNAVAILABLE = "model_unavailable"
    CONTENT_REFUSED = "content_refused"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    BAD_REFERENCE = "bad_reference"
    REFERENCE_UNREACHABLE = "reference_unreachable"
    REVIEW_UNAVAILABLE = "review_unavailable"
    STORAGE_REFUSED = "storage_refused"
    STORAGE_FAILED = "storage_failed"  # storing the images failed on every attempt
    STORE_UNAVAILABLE = "store_unavailable"
    TASK_LIMIT = "task_limit"
    CONFIG = "config"
    WORKER_LOST = "worker_lost"  # the task's worker died or stalled on every attempt
    CANCELLED = "cancelled"  # its key cancelled it (CancelAigcImageTask)
    INTERNAL = "internal"  # an error nobody named: see the worker's log

    @property
    def caused_by_request(self) -> bool:
        """Whether the request itself is why it failed (the same request would fail again anywhere):
        the faces answer these as the client's error, the others as the server's."""
        return self in _CAUSED_BY_REQUEST


_CAUSED_BY_REQUEST = frozenset(
    {
        Reason.UNKNOWN_MODEL,
        Reason.NOT_SUPPORTED,
        Reason.CONTENT_REFUSED,
        Reason.BAD_REFERENCE,
        Reason.TASK_LIMIT,
        Reason.CANCELLED,
    }
)


class ServiceError(Exception):
    """The root of the service's own errors (see the tree above)."""

    permanent: ClassVar[bool] = False
    reason: ClassVar[Reason] = Reason.INTERNAL


def is_permanent(error: BaseException) -> bool:
    """Whether retrying cannot help: a ``ServiceError`` whose class says so (anything else may pass)."""
    return isinstance(error, ServiceError) and error.permanent


def reason_of(error: BaseException) -> Reason:
    """The reason a task that met ``error`` is recorded with."""
    return error.reason if isinstance(error, ServiceError) else Reason.INTERNAL


class TaskError(ServiceError):
    """Something that keeps a task from completing; ``str()`` is the message its client sees."""


class UnknownModel(TaskError):
    permanent = True
    reason = Reason.UNKNOWN_MODEL


class NotSupported(TaskError):
    permanent = True
    reason = Reason.NOT_SUPPORTED


class ModelUnavailable(TaskError):
    permanent = True
    reason = Reason.MODEL_UNAVAILABLE


class ContentRefused(TaskError):
    permanent = True
    reason = Reason.CONTENT_REFUSED


class UnreviewedContent(ContentRefused):
    """Content review could not run, so the content was refused (review fails closed)."""

    reason = Reason.REVIEW_UNAVAILABLE


class OutOfMemory(TaskError):
    permanent = True
    reason = Reason.OUT_OF_MEMORY


class TaskTimeout(TaskError):
    permanent = True
    reason = Reason.TIMEOUT
