"""Connection guards that uvicorn's httptools protocol lacks: a cap on header bytes and a deadline
for a request's head to arrive (slowloris). Body size and body deadline are enforced by the app
while it streams the body (protocol/app.py).

Built on uvicorn's ``HttpToolsProtocol`` (its parser callbacks are the hooks); the uvicorn version
is held to the minor release it is tested with (pyproject.toml; tests/test_connection_pin.py checks the
installed one and the hooks this class overrides), and tests/test_limits.py exercises both guards over
real sockets.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def guarded_protocol(max_header_bytes: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class enforcing these limits (uvicorn instantiates it per connection)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout},
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._chunk = 0
        self._head_bytes = 0
        self._refused = False
        self._in_head = True  # a new connection owes us a request head
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._chunk = len(data)
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse_oversized_head()  # still incomplete and already too big: stop reading

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._head_bytes = self._chunk
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refuse_oversized_head()  # complete, but too big: never reaches the app
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse_oversized_head(self) -> None:
        self._refuse(b"431 Request Header Fields Too Large", "Request header fields are too large.")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and self._head_bytes:
            self._refuse(b"408 Request Timeout", "The request head did not arrive in time.")
        elif self._in_head:
            self.transport.close()  # connected and never said anything

    def _refuse(self, status: bytes, message: str) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        body = message.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n" + body
        )
        self.transport.close()
