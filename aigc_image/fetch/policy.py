"""Which IP addresses the fetcher may connect to: pure functions, no I/O.

The rule is "allow only what is global after unwrapping", never "deny what is private":
``ipaddress`` calls 100.100.100.200 (a cloud metadata address) not private, and calls the
NAT64 and 6to4 spellings of 127.0.0.1 global. So IPv6 forms that embed an IPv4 address
(IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) are judged by every address they embed,
and each must be global and unicast. Networks the operator lists explicitly
(``fetch.allow_networks``) are allowed whatever they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Special-purpose blocks (IANA registries) refused whatever ``is_global`` says: its answers
# changed between Python releases (e.g. for 192.0.0.0/24), and this list must not.
_SPECIAL = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "::/127", "64:ff9b:1::/48", "100::/64", "2001::/23",
        "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded(address: Address) -> list[Address]:
    """The address and every IPv4 address its IPv6 form carries."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_allowed(address: Address, allow_networks: Sequence[Network] = ()) -> bool:
    forms = embedded(address)
    if any(form in network for form in forms for network in allow_networks if form.version == network.version):
        return True
    return all(
        form.is_global
        and not form.is_multicast
        and not any(form in block for block in _SPECIAL if form.version == block.version)
        for form in forms
    )


def why_refused(addresses: Iterable[Address], allow_networks: Sequence[Network] = ()) -> str:
    """ "" when every address may be connected to, else the reason (a mixed answer is refused)."""
    refused = [str(a) for a in addresses if not is_allowed(a, allow_networks)]
    if refused:
        return f"address {', '.join(refused)} is not a public internet address"
    return ""
