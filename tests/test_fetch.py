"""The reference-image fetcher, in-process: S1–S7 of the security anchors.

A socket guard records every outgoing connection, to prove that a refused address is never
connected to. Test image servers run on loopback, allowed only through ``allow_networks``.
"""

from __future__ import annotations

import datetime
import http.server
import io
import ipaddress
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aigc_image.config import load_settings
from aigc_image.fetch.fetcher import Fetcher, FetchFailed, FetchRefused
from aigc_image.fetch.images import decode_reference
from aigc_image.fetch.policy import is_allowed
from tests.loopback import QuietHandler, http_server

LOOPBACK = load_settings(environ={"AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.1/32"}).fetch.allow_networks


# -- S1: the address table ----------------------------------------------------------------------

DENIED = [
    "127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "169.254.0.23", "100.100.100.200", "fd00:ec2::254", "64:ff9b::7f00:1", "2002:7f00:1::", "224.0.0.1",
    "255.255.255.255", "::", "::7f00:1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fe80::1", "ff02::1",
    "100.64.0.1", "198.18.0.1", "192.0.2.1", "240.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::",
]  # fmt: skip


@pytest.mark.parametrize("address", DENIED)
def test_non_public_addresses_are_denied_in_every_spelling(address: str) -> None:
    assert not is_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_allowed(ipaddress.ip_address(address))


def test_every_reserved_netblock_is_denied_at_both_ends() -> None:
    """Advocate's sweep: the first and last address of each special-purpose block."""
    blocks = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32",
    ]  # fmt: skip
    for block in blocks:
        network = ipaddress.ip_network(block)
        for address in (network[0], network[-1]):
            assert not is_allowed(address), address


def test_allow_networks_opens_exactly_what_it_lists() -> None:
    allowed = load_settings(environ={"AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "10.20.0.0/16, 127.0.0.1/32"}).fetch
    assert is_allowed(ipaddress.ip_address("10.20.3.4"), allowed.allow_networks)
    assert is_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allowed.allow_networks)  # the same address, mapped
    assert not is_allowed(ipaddress.ip_address("10.21.0.1"), allowed.allow_networks)
    assert not is_allowed(ipaddress.ip_address("127.0.0.2"), allowed.allow_networks)


# -- a socket guard and loopback servers --------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a socket connects to during the test."""
    seen: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        seen.append((str(address[0]), int(address[1])))
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    """Start a loopback HTTP server answering with ``handler``; returns its base URL."""
    with ExitStack() as servers:

        def start(handler: Handler) -> str:
            class Answer(QuietHandler):
                def do_GET(self) -> None:
                    handler(self)

            return servers.enter_context(http_server(Answer))

        yield start


def png_bytes(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def send(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handler


def test_an_allowed_server_is_fetched(serve: Callable[[Handler], str]) -> None:
    base = serve(send(png_bytes()))
    assert Image.open(io.BytesIO(Fetcher(LOOPBACK).fetch(f"{base}/a.png"))).size == (32, 32)


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    """Over TLS the socket still goes to the validated address, while the certificate is
    checked against the URL's host name: a certificate for another name is refused."""
    certificate, key = self_signed(tmp_path, "localhost")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificate, key)
    client_tls = ssl.create_default_context(cafile=str(certificate))

    class Answer(QuietHandler):
        def do_GET(self) -> None:
            send(png_bytes())(self)

    with http_server(Answer, server_tls) as base:
        port = base.rsplit(":", 1)[1]
        fetcher = Fetcher(LOOPBACK, tls=client_tls)
        assert fetcher.fetch(f"https://localhost:{port}/a.png").startswith(b"\x89PNG")
        assert connections == [("127.0.0.1", int(port))]  # resolved once, connected to the address
        with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|hostname"):
            fetcher.fetch(f"https://127.0.0.1:{port}/a.png")  # the certificate names localhost only


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# -- S2: host spellings of loopback, refused before any connection --------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/a.png", "http://2130706433/a.png", "http://0177.0.0.1/a.png", "http://0x7f.1/a.png",
        "http://127.1/a.png", "http://[::ffff:7f00:1]/a.png", "http://[::1]:8080/a.png", "http://0/a.png",
        "https://169.254.169.254/latest/meta-data/", "http://[64:ff9b::7f00:1]/a.png",
    ],
)  # fmt: skip
def test_loopback_and_metadata_spellings_are_refused_without_connecting(
    url: str, connections: list[tuple[str, int]]
) -> None:
    with pytest.raises(FetchRefused, match="not a public internet address"):
        Fetcher().fetch(url)
    assert connections == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://x/",
        "http://user:pw@example.com/a.png",
        "http:///a.png",
    ],
)
def test_other_schemes_credentials_and_hostless_urls_are_refused(url: str, connections: list[tuple[str, int]]) -> None:
    with pytest.raises(FetchRefused):
        Fetcher().fetch(url)
    assert connections == []


# -- S3: redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:9/", "file:///etc/passwd", "http://[::1]/"]
)
def test_a_redirect_to_a_refused_place_is_refused(
    serve: Callable[[Handler], str], connections: list[tuple[str, int]], target: str
) -> None:
    base = serve(send(b"", 302, {"Location": target}))
    with pytest.raises(FetchRefused):
        Fetcher(LOOPBACK).fetch(f"{base}/start")
    assert {host for host, _ in connections} == {"127.0.0.1"}  # only the allowed server was contacted


def test_redirects_are_followed_up_to_three(serve: Callable[[Handler], str]) -> None:
    hops: list[str] = []

    def chain(request: http.server.BaseHTTPRequestHandler) -> None:
        hops.append(request.path)
        number = int(request.path.strip("/") or 0)
        if number < 5:
            send(b"", 302, {"Location": f"/{number + 1}"})(request)
        else:
            send(png_bytes())(request)

    base = serve(chain)
    with pytest.raises(FetchRefused, match="more than 3 redirects"):
        Fetcher(LOOPBACK).fetch(f"{base}/0")
    assert hops == ["/0", "/1", "/2", "/3"]
    hops.clear()
    assert Fetcher(LOOPBACK).fetch(f"{base}/2")  # three hops: /2 → /3 → /4 → /5
    assert hops == ["/2", "/3", "/4", "/5"]


# -- S4: DNS rebinding ------------------------------------------------------------------------------


def test_each_connection_resolves_once_and_connects_to_the_checked_address(connections: list[tuple[str, int]]) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding server's two answers
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    fetcher = Fetcher(resolver=resolver, timeout=2)
    with pytest.raises((FetchFailed, FetchRefused)):  # whatever answers there (or nothing), it is not an image
        fetcher.fetch("http://rebind.example/a.png")
    assert calls == ["rebind.example"]
    assert connections == [("93.184.216.34", 80)]


def test_an_answer_mixing_public_and_private_addresses_is_refused(connections: list[tuple[str, int]]) -> None:
    fetcher = Fetcher(resolver=lambda host, port: ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(FetchRefused, match=r"10\.0\.0\.1"):
        fetcher.fetch("http://mixed.example/a.png")
    assert connections == []


# -- S5: proxies of the environment are ignored -----------------------------------------------------


def test_proxy_environment_variables_are_ignored(
    serve: Callable[[Handler], str], monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int]]
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    base = serve(send(png_bytes()))
    assert Fetcher(LOOPBACK).fetch(f"{base}/a.png")
    assert all(port != 1 for _, port in connections)


# -- S6: size and time caps -------------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_before_reading(serve: Callable[[Handler], str]) -> None:
    base = serve(send(b"x" * 2048))
    with pytest.raises(FetchRefused, match="2048 bytes; the limit is 1000"):
        Fetcher(LOOPBACK, max_bytes=1000).fetch(f"{base}/big")


def test_a_chunked_body_growing_past_the_cap_is_cut_off(serve: Callable[[Handler], str]) -> None:
    sent: list[int] = []
    stopped = threading.Event()

    def endless(request: http.server.BaseHTTPRequestHandler) -> None:
        request.protocol_version = "HTTP/1.1"
        request.send_response(200)
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        try:
            for _ in range(10_000):  # 640 MB if nobody stopped reading
                request.wfile.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                sent.append(0x10000)
        except OSError:
            pass
        stopped.set()

    base = serve(endless)
    with pytest.raises(FetchRefused, match="larger than the limit of 100000 bytes"):
        Fetcher(LOOPBACK, max_bytes=100_000).fetch(f"{base}/stream")
    assert stopped.wait(30), "the server never noticed the client had gone"
    assert sum(sent) < 300 * 0x10000  # stopped long before the end (loopback socket buffers hold a few MB)


def test_a_slow_server_hits_the_total_deadline(serve: Callable[[Handler], str]) -> None:
    client_gave_up = threading.Event()

    def drip(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "100")
        request.end_headers()
        try:
            for _ in range(100):
                request.wfile.write(b"x")
                request.wfile.flush()
                if client_gave_up.wait(1):  # one byte a second, until the test is over
                    return
        except OSError:
            pass

    base = serve(drip)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=r"took longer than 1\.5 s"):
        Fetcher(LOOPBACK, timeout=1.5).fetch(f"{base}/slow")
    assert time.monotonic() - started < 5
    client_gave_up.set()


def drip_server(serve: Callable[[Handler], str], response: bytes, stop: threading.Event) -> str:
    """A server that sends ``response`` raw, one byte every 0.5 s: each read gets data in time,
    so only a deadline for the whole fetch can end it."""

    def drip(request: http.server.BaseHTTPRequestHandler) -> None:
        try:
            for byte in response:
                request.wfile.write(bytes([byte]))
                request.wfile.flush()
                if stop.wait(0.5):
                    return
        except OSError:
            pass

    return serve(drip)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\n0123456789",  # a slow head
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0000000000000000000001\r\nx\r\n" * 3,  # chunk sizes
    ],
    ids=["head", "chunk-size-lines"],
)
def test_the_timeout_bounds_the_whole_fetch_however_slowly_bytes_arrive(
    serve: Callable[[Handler], str], response: bytes
) -> None:
    stop = threading.Event()
    base = drip_server(serve, response, stop)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=r"took longer than 2 s"):
        Fetcher(LOOPBACK, timeout=2).fetch(f"{base}/slow")
    assert time.monotonic() - started < 4  # one socket timeout alone would have allowed minutes
    stop.set()


def test_redirects_spend_the_same_deadline(serve: Callable[[Handler], str]) -> None:
    over = threading.Event()

    def slow_redirect(request: http.server.BaseHTTPRequestHandler) -> None:
        if over.wait(0.8):  # each hop answers in time; together they do not
            return
        request.send_response(302)
        request.send_header("Location", "/again")
        request.end_headers()

    base = serve(slow_redirect)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="took longer than 2 s"):
        Fetcher(LOOPBACK, timeout=2, max_redirects=5).fetch(f"{base}/first")
    assert time.monotonic() - started < 3
    over.set()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/a picture.png", "http://127.0.0.1:9/a\x07.png"])
def test_a_malformed_url_is_refused_not_retried(url: str, connections: list[tuple[str, int]]) -> None:
    with pytest.raises(FetchRefused, match="not a valid URL"):
        Fetcher(LOOPBACK).fetch(url)
    assert connections == []


@pytest.mark.parametrize(("status", "error"), [(404, FetchRefused), (403, FetchRefused), (503, FetchFailed)])
def test_error_statuses_say_whether_trying_again_may_help(
    serve: Callable[[Handler], str], status: int, error: type[Exception]
) -> None:
    base = serve(send(b"no", status))
    with pytest.raises(error, match=f"HTTP {status}"):
        Fetcher(LOOPBACK).fetch(f"{base}/x")


# -- S7: decompression bombs and formats -----------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def saved(image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, image_format, **options)
    return buffer.getvalue()


def many_frame_gif() -> bytes:
    frames = [Image.new("P", (8, 8), n % 256) for n in range(1000)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png_header_only(20000, 20000), "too large to decode|limit is"),  # Pillow's own bomb check, at open()
        (png_header_only(12000, 12000), "too large to decode|limit is"),  # Pillow's warning, made an error
        (png_header_only(8193, 4096), "limit is"),
        (saved("GIF"), "not a JPEG, PNG or WebP"),
        (saved("TIFF"), "not a JPEG, PNG or WebP"),
        (saved("ICO"), "not a JPEG, PNG or WebP"),
        (saved("BMP"), "not a JPEG, PNG or WebP"),
        (many_frame_gif(), "not a JPEG, PNG or WebP"),
        (saved("JPEG")[:-200], "cannot be decoded"),
        (b"<html>not an image</html>", "not a JPEG, PNG or WebP"),
    ],
    ids=["png-20000", "png-12000", "png-8193x4096", "gif", "tiff", "ico", "bmp", "gif-1000-frames", "jpeg-cut", "html"],
)
def test_bombs_and_other_formats_are_refused_before_decoding(data: bytes, reason: str) -> None:
    with pytest.raises(FetchRefused, match=reason):
        decode_reference(data, max_pixels=4096 * 4096)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_jpeg_png_and_webp_up_to_the_cap_are_decoded(image_format: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), (10, 200, 30)).save(buffer, image_format)
    image = decode_reference(buffer.getvalue(), max_pixels=4096 * 4096)
    assert image.size == (1024, 1024) and image.mode == "RGB"
