"""Connection limits over real sockets, on every face that reads a body (the MPS API, /v1,
/sdapi/v1): oversized heads, slow heads (slowloris), slow bodies, oversized bodies cut off before
they are read, and connections closed after a refused key instead of draining what trickles in."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import pytest

from aigc_image.protocol import signing
from tests.helpers import SECRET_ID, SECRET_KEY, LiveServer, live_server

pytestmark = pytest.mark.slow

LIMITS = {
    "AIGC_IMAGE_API_MAX_HEADER_BYTES": "4096",
    "AIGC_IMAGE_API_HEADER_TIMEOUT": "1",
    "AIGC_IMAGE_API_BODY_TIMEOUT": "1",
    "AIGC_IMAGE_API_MAX_IMAGE_BODY_BYTES": str(1024 * 1024),
}
BEARER = f"Authorization: Bearer {SECRET_ID}:{SECRET_KEY}\r\n"
BASIC = "Authorization: Basic " + base64.b64encode(f"{SECRET_ID}:{SECRET_KEY}".encode()).decode() + "\r\n"
HUGE = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("limits"), "--no-worker", env=LIMITS) as server:
        yield server


def connect(server: LiveServer) -> socket.socket:
    host, port = server.host.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def signed_head(server: LiveServer, body: bytes, extra: str = "") -> bytes:
    headers = signing.sign_tc3_headers(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, action="DescribeAigcImageTask", body=body, host=server.host,
        timestamp=int(time.time()),
    )  # fmt: skip
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST / HTTP/1.1\r\n{lines}{extra}Content-Length: {len(body)}\r\n\r\n".encode()


def test_a_normal_request_fits_the_limits(limited: LiveServer) -> None:
    body = json.dumps({"TaskId": "4-AigcImage-" + "0" * 32}).encode()
    with connect(limited) as sock:
        sock.sendall(signed_head(limited, body, "Connection: close\r\n") + body)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b"ResourceNotFound.TaskNotFound" in reply


def test_an_oversized_head_is_refused_before_it_is_read(limited: LiveServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(1000):  # 64 MiB would be sent if the server kept reading
                sock.sendall(b"X-Padding: " + b"a" * 65536 + b"\r\n")
    with connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")
        assert read_reply(sock).startswith(b"HTTP/1.1 431")


def test_a_head_that_trickles_in_is_cut_off(limited: LiveServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        reply = read_reply(sock)  # the server closes; the client never finished its head
    assert reply.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 8


def test_an_idle_connection_is_closed(limited: LiveServer) -> None:
    with connect(limited) as sock:
        assert read_reply(sock) == b""  # closed without a word, since none was asked


def test_a_body_that_trickles_in_is_cut_off(limited: LiveServer) -> None:
    body = json.dumps({"TaskId": "4-AigcImage-" + "0" * 32}).encode()
    with connect(limited) as sock:
        sock.sendall(signed_head(limited, body) + body[:5])  # the rest never comes
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()


def test_many_slow_clients_are_all_cut_off_and_the_server_keeps_serving(limited: LiveServer) -> None:
    """Twenty slowloris connections at once: each is closed by the head deadline (they would hold
    their sockets forever without it), and a normal request is answered meanwhile and after."""
    slow = [connect(limited) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # never finished
        body = json.dumps({"TaskId": "4-AigcImage-" + "0" * 32}).encode()
        with connect(limited) as sock:
            sock.sendall(signed_head(limited, body, "Connection: close\r\n") + body)
            assert b"ResourceNotFound.TaskNotFound" in read_reply(sock)
        started = time.monotonic()
        assert all(read_reply(sock).startswith(b"HTTP/1.1 408") for sock in slow)
        assert time.monotonic() - started < 8
    finally:
        for sock in slow:
            sock.close()


def head(path: str, headers: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}{size}\r\n".encode()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/images/generations", BEARER + "Content-Type: application/json\r\n"),
        ("/v1/images/edits", BEARER + "Content-Type: multipart/form-data; boundary=b\r\n"),
        ("/sdapi/v1/txt2img", BASIC + "Content-Type: application/json\r\n"),
    ],
    ids=["v1-json", "v1-multipart", "sdapi"],
)
def test_a_body_that_trickles_in_is_cut_off_on_every_face(limited: LiveServer, path: str, headers: str) -> None:
    with connect(limited) as sock:
        start = b"--b\r\n" if "multipart" in headers else b"{"
        sock.sendall(head(path, headers, 1000) + start)  # the start, then nothing more
        reply = read_reply(sock)  # returns only because the server closes the connection
    assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/images/edits", "Authorization: Bearer nobody:wrong\r\nContent-Type: multipart/form-data; boundary=b\r\n",
         b"401"),
        ("/sdapi/v1/img2img", "Authorization: Basic bm9ib2R5Ondyb25n\r\nContent-Type: application/json\r\n", b"401"),
        ("/v1/images/edits", BEARER + "Content-Type: multipart/form-data; boundary=b\r\n", b"413"),
        ("/sdapi/v1/img2img", BASIC + "Content-Type: application/json\r\n", b"413"),
        ("/", "Content-Type: application/json\r\n", b"200"),  # the MPS face: RequestSizeLimitExceeded
    ],
    ids=["v1-401", "sdapi-401", "v1-413", "sdapi-413", "mps-413"],
)  # fmt: skip
def test_a_refused_upload_is_answered_at_once_and_never_read(
    limited: LiveServer, path: str, headers: str, status: bytes
) -> None:
    """200 MB announced: the reply comes before the body, and the connection closes with it; the
    client is stopped long before it has sent what it announced."""
    with connect(limited) as sock:
        sock.sendall(head(path, headers, HUGE))
        sent = 0
        with pytest.raises(OSError):  # ConnectionResetError or BrokenPipeError, once the server has closed
            while sent < HUGE:
                sock.sendall(b"x" * 65536)
                sent += 65536
    assert sent < HUGE
    with connect(limited) as sock:  # the same, read from the server's side
        sock.sendall(head(path, headers, HUGE) + b"x" * 1024)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 " + status) and b"connection: close" in reply.lower()


def test_a_chunked_upload_is_counted_and_cut_off_at_the_cap(limited: LiveServer) -> None:
    """No Content-Length to refuse it by: the chunks are counted and it stops at the cap (1 MiB here),
    with nothing past it held or spooled."""
    path, headers = "/v1/images/edits", BEARER + "Content-Type: multipart/form-data; boundary=b\r\n"
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    with connect(limited) as sock:
        sock.sendall(
            head(path, headers, None) + b"--b\r\nContent-Disposition: form-data; name=image; filename=a\r\n\r\n"
        )
        sent = 0
        with pytest.raises(OSError):
            while sent < HUGE:
                sock.sendall(chunk)
                sent += 65536
    assert sent < HUGE
