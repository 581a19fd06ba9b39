"""Several hosts on one machine: network namespaces joined by switches, for tests and benchmarks.

Each host is a network namespace of its own with ``lo`` up and one interface per network it is
on; each network is a Linux bridge (a switch) in one more namespace, and every host's interface
is a veth pair whose other end is a port of that switch. Addresses are private and exist only in
these namespaces. ``cut`` sets a host's switch port down: the host's link goes dark at once, as
when a cable or a switch port fails, and its packets go nowhere (no error comes back: TCP waits,
as it does between real hosts). Everything is removed at ``close``, also after a failure.

Needs root and iproute2 (``ip``). Names start with ``aigc-<pid>-`` so runs on one machine never
meet, and namespaces that a killed run left behind are removed by the next.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


def why_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    return None


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class Network:
    """Hosts (namespaces) on switched networks; ``close`` removes them all."""

    def __init__(self) -> None:
        remove_abandoned()
        self.prefix = f"aigc-{os.getpid()}-"
        self.switch = self._namespace("switch")
        self.hosts: dict[str, dict[str, str]] = {}  # host → network → address
        self._networks: dict[str, str] = {}  # network → prefix length

    def _namespace(self, name: str) -> str:
        namespace = self.prefix + name
        ip("netns", "add", namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def namespace(self, host: str) -> str:
        return self.prefix + host

    def add_network(self, name: str, prefix_length: int = 24) -> None:
        ip("-n", self.switch, "link", "add", name, "type", "bridge")
        ip("-n", self.switch, "link", "set", name, "up")
        self._networks[name] = str(prefix_length)

    def add_host(self, name: str, addresses: dict[str, str]) -> None:
        """A host with an interface on each network, named after it: ``{"back": "10.1.2.3"}``."""
        namespace = self._namespace(name)
        self.hosts[name] = dict(addresses)
        for network, address in addresses.items():
            port = self._port(name, network)
            ip("-n", namespace, "link", "add", network, "type", "veth", "peer", "name", port, "netns", self.switch)
            ip("-n", self.switch, "link", "set", port, "master", network, "up")
            ip("-n", namespace, "address", "add", f"{address}/{self._networks[network]}", "dev", network)
            ip("-n", namespace, "link", "set", network, "up")

    def _port(self, host: str, network: str) -> str:
        port = f"{host}-{network}"
        if len(port) > 15:  # the kernel's limit for interface names
            raise ValueError(f"host and network names too long for an interface: {port}")
        return port

    def address(self, host: str, network: str) -> str:
        return self.hosts[host][network]

    def cut(self, host: str, network: str) -> None:
        """The host's link to ``network`` goes dark (its switch port goes down)."""
        ip("-n", self.switch, "link", "set", self._port(host, network), "down")

    def mend(self, host: str, network: str) -> None:
        ip("-n", self.switch, "link", "set", self._port(host, network), "up")

    def popen(self, host: str, command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` on ``host`` (``ip netns exec`` replaces itself with it: same pid)."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespace(host), *command], **options)

    @contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """Run this thread's network calls from ``host`` until the block ends (sockets opened in
        it stay on that host). Subprocesses started meanwhile would start there too."""
        with open("/proc/thread-self/ns/net") as home, open(NETNS_DIR / self.namespace(host)) as there:
            _setns(there.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def close(self) -> None:
        """Remove every namespace (and so every veth and bridge). Stop their processes first: a
        namespace that still holds a process lives on, unnamed, until it exits."""
        for host in self.hosts:
            subprocess.run(["ip", "netns", "delete", self.namespace(host)], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "delete", self.switch], capture_output=True, timeout=30)
        self.hosts.clear()


def remove_abandoned() -> None:
    """Delete namespaces of runs whose process is gone (a run killed before it could clean up)."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        match = re.fullmatch(r"aigc-(\d+)-.+", entry.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True, timeout=30)
