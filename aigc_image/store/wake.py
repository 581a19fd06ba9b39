"""Wake idle workers of one SQLite database the moment a task is created.

Each waiting worker binds a Unix datagram socket in a directory shared by everyone
using the same database file; ``create`` sends one byte to each. A worker that missed a
wake-up still finds the task on its next poll, so a lost datagram costs latency,
never a task. (The PostgreSQL store uses LISTEN/NOTIFY instead: store/postgres.py.)

A worker also wakes itself through its own socket (``WakeReceiver.interrupt``) when it has work of
its own: a batch whose reference images were fetched on another thread.

The directory lives under the system temp dir, named by a hash of the database path,
because Unix socket paths are limited to about 100 bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from pathlib import Path


def wake_dir(database_path: str) -> Path:
    digest = hashlib.sha256(os.path.realpath(database_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"aigc-image-wake-{digest}"


class WakeSender:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def wake_all(self) -> None:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self._dir, name)
            try:
                self._sock.sendto(b"!", path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # left behind by a worker that died
            except (BlockingIOError, OSError):
                pass  # its buffer is full: it has wake-ups pending already

    def close(self) -> None:
        self._sock.close()


class WakeReceiver:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self._path = directory / f"{os.getpid()}-{id(self):x}.sock"
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self._path))
        self._interrupts = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # sent from other threads
        self._interrupts.setblocking(False)

    def interrupt(self) -> None:
        """End the wait in progress now, or the next one at once (a datagram to its own socket)."""
        with contextlib.suppress(BlockingIOError, OSError):  # a full buffer: a wake-up is pending already
            self._interrupts.sendto(b"!", str(self._path))

    def wait(self, timeout: float) -> None:
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(64)
        except TimeoutError:
            return
        self._sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # drain, so one wake-up per burst of creates
                self._sock.recv(64)

    def close(self) -> None:
        self._sock.close()
        self._interrupts.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
