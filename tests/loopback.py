"""Small HTTP servers on 127.0.0.1 for tests that need a real peer: image hosts, an LLM API."""

from __future__ import annotations

import http.server
import io
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 from a thread until the block ends; yields the base URL
    (``https`` with ``tls``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class ImageServer:
    """Serves /<name> from ``images`` on 127.0.0.1 and records every request path."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.port = 0

    def handler(self) -> type[QuietHandler]:
        images, requests = self.images, self.requests

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                body = images.get(self.path.strip("/"), b"")
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def add(self, name: str, size: tuple[int, int], color: tuple[int, int, int]) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", size, color).save(buffer, "PNG")
        self.images[name] = buffer.getvalue()
        return f"http://127.0.0.1:{self.port}/{name}"


class SlowServer:
    """A real socket on 127.0.0.1 that answers every request with an image one byte a second (the
    status line and headers too), until the client hangs up or ``stop``. It records how many
    connections are open, and when each one ended (``time.time()``, the service's clock)."""

    def __init__(self, body: bytes, interval: float = 1.0) -> None:
        self._response = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )
        self._interval = interval
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.open = 0
        self.requests = 0
        self.closed_at: list[float] = []
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=True)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        slow = self

        class Drip(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)  # the request (one small GET)
                with slow._changed:
                    slow.open += 1
                    slow.requests += 1
                    slow._changed.notify_all()
                try:
                    for byte in slow._response:
                        self.request.sendall(bytes([byte]))
                        if slow._stop.wait(slow._interval):
                            return
                except OSError:
                    pass  # the client hung up
                finally:
                    with slow._changed:
                        slow.open -= 1
                        slow.closed_at.append(time.time())
                        slow._changed.notify_all()

        return Drip

    def wait_for(self, predicate: Callable[[SlowServer], bool], timeout: float = 60) -> bool:
        """Until ``predicate(self)`` holds (checked whenever a connection opens or ends)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def __enter__(self) -> SlowServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()
