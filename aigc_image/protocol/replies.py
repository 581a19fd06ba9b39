"""From exceptions to replies, one mapping per face.

Each face (the MPS API at ``/``, ``/v1``, ``/sdapi/v1``) declares which reply each exception type
gets, as starlette's ``exception_handlers`` do: the handler of the most specific class in the
exception's MRO answers. Anything no handler claims is a bug or an outage nobody named: it is
logged with its traceback and answered with the face's own "internal error", never with the
traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    response: Response
    code: str  # what aigc_image_requests_total counts it as (a Code, or an HTTP status)


Handler = Callable[[Any, str], Reply]  # (the exception, the request id) → its reply


class ErrorReplies:
    def __init__(self, handlers: Mapping[type[BaseException], Handler], unexpected: Callable[[str], Reply]) -> None:
        self.handlers = dict(handlers)
        self.unexpected = unexpected

    def reply(self, exc: BaseException, request_id: str) -> Reply:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler(exc, request_id)
        log.error("request %s failed", request_id, exc_info=exc, extra={"request_id": request_id})
        return self.unexpected(request_id)
