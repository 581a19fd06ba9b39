"""Download a reference image from a user's URL, safely.

For every connection (the first and each redirect): http or https only, no credentials in
the URL; the host is resolved once, every address of the answer must pass policy.py (a mixed
answer is refused), and the socket connects to that validated address, so a DNS answer that
changes between check and connect (rebinding) cannot redirect it. TLS still verifies the
certificate against the host name. Proxy settings of the environment are never used
(http.client ignores them). At most ``max_redirects`` redirects, each re-checked; the body is
capped at ``max_bytes`` while it streams, and the whole fetch at ``timeout`` seconds.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from aigc_image.fetch.policy import Address, Network, why_refused

Resolver = Callable[[str, int], list[str]]
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(Exception):
    """The URL or its content is not acceptable; fetching again will not change that."""

    permanent = True


class FetchFailed(Exception):
    """The fetch did not work this time (network error, timeout, server error); it may later."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in answers))


@dataclass(frozen=True)
class Fetcher:
    allow_networks: Sequence[Network] = ()
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 30.0
    max_redirects: int = 3
    resolver: Resolver = system_resolver
    tls: ssl.SSLContext | None = None  # None: the system's trusted certificates

    def fetch(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_redirects + 1):
            status, location, body = self._get(url, deadline)
            if status not in _REDIRECTS:
                if status != 200:
                    error = FetchFailed if status >= 500 or status == 429 else FetchRefused
                    raise error(f"{_shown(url)} answered HTTP {status}")
                return body
            if not location:
                raise FetchRefused(f"{_shown(url)} redirected without a Location")
            url = urljoin(url, location)
        raise FetchRefused(f"more than {self.max_redirects} redirects")

    def _get(self, url: str, deadline: float) -> tuple[int, str, bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchRefused(f"only http and https URLs can be fetched, not {parts.scheme or 'this'}: {_shown(url)}")
        if parts.username is not None or parts.password is not None:
            raise FetchRefused("URLs with credentials are not fetched")
        host = parts.hostname
        if not host:
            raise FetchRefused(f"{_shown(url)} has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchRefused(f"{_shown(url)} has an invalid port") from None
        address = self._resolve(host, port)
        connection: _PinnedHTTP | _PinnedHTTPS | None = None
        try:
            connection = _pinned_connection(parts.scheme, host, port, address, _remaining(deadline), self.tls)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"User-Agent": "aigc-image", "Accept": "image/*"})
            reply = connection.getresponse()
            if reply.status in _REDIRECTS:
                return reply.status, reply.getheader("Location", ""), b""
            if reply.status != 200:
                return reply.status, "", b""
            return 200, "", self._read(reply, connection, deadline)
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() >= deadline:
                raise FetchFailed(f"fetching {_shown(url)} took longer than {self.timeout:g} s") from None
            raise FetchFailed(f"fetching {_shown(url)} failed: {type(exc).__name__}: {exc}") from None
        finally:
            if connection is not None:
                connection.close()

    def _resolve(self, host: str, port: int) -> str:
        """One resolution per connection; every answer must be allowed; connect to the first."""
        literal = host.strip("[]")
        try:
            addresses: list[Address] = [ipaddress.ip_address(literal)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        if not addresses:
            raise FetchFailed(f"{host} has no address")
        reason = why_refused(addresses, self.allow_networks)
        if reason:
            raise FetchRefused(f"{host}: {reason}; reference images must be on the public internet")
        return str(addresses[0])

    def _read(self, reply: http.client.HTTPResponse, connection: _Pinned, deadline: float) -> bytes:
        declared = reply.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchRefused(f"the image is {int(declared)} bytes; the limit is {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        while True:
            # Each read may wait at most what is left of the whole fetch's deadline.
            if connection.pinned is not None:
                connection.pinned.settimeout(_remaining(deadline))
            chunk = reply.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchRefused(f"the image is larger than the limit of {self.max_bytes} bytes")
            chunks.append(chunk)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _shown(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "…"


class _Pinned:
    """Connects to the validated ``address`` while Host (and TLS SNI) name the URL's host.

    The socket is also kept as ``pinned``: with ``Connection: close`` the connection hands its
    socket to the reply and forgets it, and reads must still be bounded by the deadline.
    """

    address = ""
    port: int
    timeout: float | None
    pinned: socket.socket | None = None

    def _open(self) -> socket.socket:
        return socket.create_connection((self.address, self.port), timeout=self.timeout)


class _PinnedHTTP(_Pinned, http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = self.pinned = self._open()


class _PinnedHTTPS(_Pinned, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.tls_context = context

    def connect(self) -> None:
        self.sock = self.pinned = self.tls_context.wrap_socket(self._open(), server_hostname=self.host)


def _pinned_connection(
    scheme: str, host: str, port: int, address: str, timeout: float, tls: ssl.SSLContext | None
) -> _PinnedHTTP | _PinnedHTTPS:
    connection: _PinnedHTTP | _PinnedHTTPS
    if scheme == "http":
        connection = _PinnedHTTP(host, port, timeout=timeout)
    else:
        connection = _PinnedHTTPS(host, port, timeout, tls or ssl.create_default_context())
    connection.address = address
    return connection
