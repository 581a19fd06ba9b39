"""Small HTTP servers on 127.0.0.1 for tests that need a real peer: image hosts, an LLM API."""

from __future__ import annotations

import http.server
import io
import ssl
import threading
from collections.abc import Iterator
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
