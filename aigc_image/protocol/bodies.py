"""Reading request bodies within a size cap and a deadline, on every face.

The cap is checked against ``Content-Length`` before a byte of the body is read, then counted per
chunk as it streams in (chunked bodies, multipart uploads too), so nothing past it is ever held in
memory or spooled to disk. The deadline covers the whole body: a client that sends one byte a
second is cut off when it passes. Both answers close the connection (``CLOSE``): the server does
not go on draining a body it has refused, and neither does it after refusing a key (401).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import Request

CLOSE = {"Connection": "close"}  # uvicorn closes the connection after a reply that says so


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.")
        self.limit = limit


class BodyTimeout(Exception):
    """The body did not arrive within the deadline."""


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Raise BodyTimeout if the block (reading a body) takes longer than ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BodyTimeout(f"The request body did not arrive within {seconds:g} s.") from None


def check_declared(request: Request, limit: int) -> None:
    """BodyTooLarge if the request says, before sending it, that its body is over ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, stopped with BodyTooLarge as soon as they add up to more than ``limit``."""
    check_declared(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in limited_stream(request, limit)])
