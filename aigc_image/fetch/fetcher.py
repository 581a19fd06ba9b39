"""Download a reference image from a user's URL, safely.

For every connection (the first and each redirect): http or https only, no credentials in
the URL; the host is resolved once, every address of the answer must pass policy.py (a mixed
answer is refused), and the socket connects to that validated address, so a DNS answer that
changes between check and connect (rebinding) cannot redirect it. TLS still verifies the
certificate against the host name. Proxy settings of the environment are never used
(http.client ignores them). At most ``max_redirects`` redirects, each re-checked; the body is
capped at ``max_bytes`` while it streams. ``timeout`` bounds the whole fetch (connecting, the
response head, the body, every redirect): a watchdog shuts the socket down when it passes, since
a socket timeout bounds only each read and a server that drips a byte at a time would evade it.
The same watchdog ends a fetch at once when its ``Abort`` is set (the worker is stopping).
A malformed URL is refused, not retried.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from aigc_image.errors import Reason, ServiceError
from aigc_image.fetch.policy import Address, Network, why_refused

Resolver = Callable[[str, int], list[str]]
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(ServiceError):
    """The URL or its content is not acceptable; fetching again will not change that."""

    permanent = True
    reason = Reason.BAD_REFERENCE


class FetchFailed(ServiceError):
    """The fetch did not work this time (network error, timeout, server error); it may later."""

    reason = Reason.REFERENCE_UNREACHABLE


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

    def fetch(self, url: str, timeout: float | None = None, abort: Abort | None = None) -> bytes:
        """The body of ``url``; ``timeout``: less than ``self.timeout`` for this fetch (what is left of
        a task's allowance); ``abort``: ends it early (FetchFailed)."""
        timeout = self.timeout if timeout is None else min(timeout, self.timeout)
        deadline = time.monotonic() + timeout
        watchdog = _Watchdog(deadline)
        if abort is not None:
            abort.watch(watchdog)
        try:
            for _ in range(self.max_redirects + 1):
                status, location, body = self._get(url, deadline, watchdog)
                if status not in _REDIRECTS:
                    if status != 200:
                        error = FetchFailed if status >= 500 or status == 429 else FetchRefused
                        raise error(f"{_shown(url)} answered HTTP {status}")
                    return body
                if not location:
                    raise FetchRefused(f"{_shown(url)} redirected without a Location")
                url = urljoin(url, location)
            raise FetchRefused(f"more than {self.max_redirects} redirects")
        except FetchFailed:
            if abort is not None and abort.is_set():
                raise FetchFailed("the fetch was stopped: the worker is stopping") from None
            if watchdog.fired:
                raise FetchFailed(f"fetching {_shown(url)} took longer than {timeout:.3g} s") from None
            raise
        finally:
            watchdog.stop()
            if abort is not None:
                abort.forget(watchdog)

    def _get(self, url: str, deadline: float, watchdog: _Watchdog) -> tuple[int, str, bytes]:
        if any(char.isspace() or not char.isprintable() for char in url):
            raise FetchRefused(f"{_shown(url)!r} is not a valid URL (it contains spaces or control characters)")
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
            connection.watchdog = watchdog
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"User-Agent": "aigc-image", "Accept": "image/*"})
            reply = connection.getresponse()
            if reply.status in _REDIRECTS:
                return reply.status, reply.getheader("Location", ""), b""
            if reply.status != 200:
                return reply.status, "", b""
            body = self._read(reply, connection, deadline)
            if watchdog.fired:  # the socket was shut mid-body: what arrived is not the whole image
                raise TimeoutError("deadline passed")
            return 200, "", body
        except http.client.InvalidURL as exc:
            raise FetchRefused(f"{_shown(url)} is not a valid URL: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired or time.monotonic() >= deadline:
                watchdog.fired = True  # fetch() names the limit that ended it
                raise FetchFailed(f"fetching {_shown(url)} took too long") from None
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
        if declared and declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
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


class Abort:
    """Ends the fetches that watch it, at once and for good (``set``): a worker that is stopping."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._watchdogs: set[_Watchdog] = set()

    def set(self) -> None:
        with self._lock:
            self._set = True
            watchdogs = list(self._watchdogs)
        for watchdog in watchdogs:
            watchdog.fire()

    def is_set(self) -> bool:
        return self._set

    def watch(self, watchdog: _Watchdog) -> None:
        with self._lock:
            self._watchdogs.add(watchdog)
            aborted = self._set
        if aborted:
            watchdog.fire()

    def forget(self, watchdog: _Watchdog) -> None:
        with self._lock:
            self._watchdogs.discard(watchdog)


class _Watchdog:
    """Shuts the fetch's socket down when its deadline passes, whatever the server is sending."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.fired = False
        threading.Thread(target=self._wait, name="fetch-deadline", daemon=True).start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.fired:
                _shut(sock)

    def _wait(self) -> None:
        if not self._stopped.wait(max(0.0, self._deadline - time.monotonic())):
            self.fire()

    def fire(self) -> None:
        """Shut the socket down now (and the next one, should it connect after)."""
        with self._lock:
            self.fired = True
            if self._socket is not None:
                _shut(self._socket)

    def stop(self) -> None:
        self._stopped.set()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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
    watchdog: _Watchdog | None = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        if self.watchdog is not None:
            self.watchdog.watch(sock)
        return sock


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
