"""Tencent Cloud API signatures, pure functions over bytes and strings.

TC3-HMAC-SHA256 (signature v3) and the legacy v1 (HmacSHA1 / HmacSHA256), exactly as
the official SDKs compute them. The server verifies with the same functions a client
signs with; nothing here touches the network, the clock or the key store.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

TC3_ALGORITHM = "TC3-HMAC-SHA256"
V1_METHODS = ("HmacSHA1", "HmacSHA256")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SERVICE = "mps"
_HEX_64 = re.compile(r"[0-9a-fA-F]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_date(timestamp: int) -> str:
    return _utc_day(timestamp // 86400)


@functools.lru_cache(maxsize=8)
def _utc_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def tc3_canonical_request(
    method: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """The six-line canonical request; ``headers`` maps lower-case names to values as received."""
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers)
    return "\n".join([method, "/", query, canonical_headers, ";".join(signed_headers), payload_hash])


def signing_services(host: str) -> tuple[str, ...]:
    """The service names a correct TC3 signature for this API may carry in its credential scope.

    ``mps``, as the documentation and the Python and Go SDKs sign; and the first label of the host,
    as the Node.js SDK derives it from its endpoint (``endpoint.split(".")[0]``: ``mps`` for
    ``mps.tencentcloudapi.com``, but ``127`` for ``127.0.0.1:8000``). The key is derived with that
    name, so either way only the holder of the SecretKey can sign.
    """
    node = host.split(".", 1)[0]
    return (SERVICE,) if node in ("", SERVICE) else (SERVICE, node)


def canonical_header_values(as_sent: Mapping[str, str]) -> list[Mapping[str, str]]:
    """The signed headers' values as clients sign them: as sent (the Python SDK); lower-cased (the
    documentation); and with ``host`` without its port (the Node.js SDK signs the URL's hostname
    but sends host and port)."""
    variants = [as_sent, {name: value.lower() for name, value in as_sent.items()}]
    host = as_sent.get("host", "")
    if ":" in host and not host.endswith("]"):
        variants.append({**as_sent, "host": host.rsplit(":", 1)[0]})
    unique: list[Mapping[str, str]] = []
    for variant in variants:
        if variant not in unique:
            unique.append(variant)
    return unique


def tc3_string_to_sign(timestamp: int, service: str, canonical_request: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return "\n".join([TC3_ALGORITHM, str(timestamp), scope, sha256_hex(canonical_request.encode("utf-8"))])


@functools.lru_cache(maxsize=1024)
def tc3_signing_key(secret_key: str, date: str, service: str) -> bytes:
    """Derived per key and day, so it is cached (bounded) like the SDKs' servers cache it."""
    k_date = hmac.new(("TC3" + secret_key).encode("utf-8"), date.encode("utf-8"), hashlib.sha256).digest()
    k_service = hmac.new(k_date, service.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(k_service, b"tc3_request", hashlib.sha256).digest()


def tc3_signature(secret_key: str, timestamp: int, service: str, canonical_request: str) -> str:
    key = tc3_signing_key(secret_key, utc_date(timestamp), service)
    string_to_sign = tc3_string_to_sign(timestamp, service, canonical_request)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Tc3Authorization:
    """The parsed ``Authorization: TC3-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""

    secret_id: str
    date: str
    service: str
    signed_headers: list[str]
    signature: str


def parse_tc3_authorization(value: str) -> Tc3Authorization | None:
    """Parse the header; None when it is not a well-formed TC3 authorization."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != TC3_ALGORITHM:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    try:
        credential, signed, signature = parts["Credential"], parts["SignedHeaders"], parts["Signature"]
    except KeyError:
        return None
    pieces = credential.split("/")
    if len(pieces) != 4 or pieces[3] != "tc3_request" or not pieces[0]:
        return None
    names = signed.split(";")
    if "content-type" not in names or "host" not in names or names != sorted(names):
        return None
    if not _HEX_64.fullmatch(signature):
        return None
    return Tc3Authorization(pieces[0], pieces[1], pieces[2], names, signature.lower())


def v1_string_to_sign(method: str, host: str, params: Mapping[str, str]) -> str:
    """``<METHOD><host>/?k1=v1&k2=v2`` over raw (decoded) values, names sorted, Signature left out."""
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "Signature")
    return f"{method}{host}/?{query}"


def v1_signature(secret_key: str, string_to_sign: str, signature_method: str) -> str:
    digest = hashlib.sha256 if signature_method == "HmacSHA256" else hashlib.sha1
    mac = hmac.new(secret_key.encode("utf-8"), string_to_sign.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def sign_tc3_headers(
    *,
    secret_id: str,
    secret_key: str,
    action: str,
    body: bytes,
    host: str,
    timestamp: int,
    version: str = "2019-06-12",
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers a client sends for a TC3-signed JSON POST (what the official SDK sends)."""
    canonical = tc3_canonical_request(
        "POST", "", {"content-type": content_type, "host": host}, ["content-type", "host"], sha256_hex(body)
    )
    signature = tc3_signature(secret_key, timestamp, SERVICE, canonical)
    credential = f"{secret_id}/{utc_date(timestamp)}/{SERVICE}/tc3_request"
    authorization = f"{TC3_ALGORITHM} Credential={credential}, SignedHeaders=content-type;host, Signature={signature}"
    return {
        "Authorization": authorization,
        "Content-Type": content_type,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": version,
    }
