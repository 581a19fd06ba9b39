"""Who is calling, and which action with which parameters: request authentication.

Turns raw request parts (method, raw query, headers, raw body) into a ``Call`` or
raises the protocol error that explains why not. Order of checks, cheapest and most
general first: authorization shape → action and version → timestamp window →
SecretId → token → signature. Signatures are computed over the bytes, query and
``Host`` value exactly as received (tccli sends ``Host: http://127.0.0.1:PORT``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aigc_image.bounded import ParseLimits
from aigc_image.protocol import errors, signing
from aigc_image.protocol import params as p
from aigc_image.protocol.params import DEFAULT_LIMITS

API_VERSION = "2019-06-12"
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"

_SECRET_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣", which int() refuses
# Common parameters of signature v1; everything else belongs to the action.
_V1_COMMON = {
    "Action", "Version", "Timestamp", "Nonce", "SecretId", "Signature", "SignatureMethod",
    "Region", "Token", "Language", "RequestClient",
}  # fmt: skip


@dataclass(frozen=True)
class Call:
    """An authenticated API call. ``from_strings`` marks form/query parameters (all strings)."""

    secret_id: str
    action: str
    params: dict[str, Any]
    from_strings: bool
    # Equal for byte-identical signed requests (a replay), different for any re-signed one.
    fingerprint: str


@dataclass(frozen=True)
class RawRequest:
    method: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class Authenticator:
    def __init__(
        self,
        secret_for: Callable[[str], str | None],
        actions: Collection[str],
        now: Callable[[], float],
        window: int,
        allow_unsigned_payload: bool = False,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self._secret_for = secret_for
        self._actions = actions
        self._now = now
        self._window = window
        self._allow_unsigned_payload = allow_unsigned_payload
        self._limits = limits

    def authenticate(self, request: RawRequest) -> Call:
        if "authorization" in request.headers:
            return self._tc3(request)
        return self._v1(request)

    # -- TC3-HMAC-SHA256 -------------------------------------------------------------

    def _tc3(self, request: RawRequest) -> Call:
        headers = request.headers
        auth = signing.parse_tc3_authorization(headers["authorization"])
        if auth is None:
            raise errors.InvalidAuthorization(
                "The Authorization header must be 'TC3-HMAC-SHA256 Credential=<SecretId>/<Date>/mps/tc3_request, "
                "SignedHeaders=content-type;host, Signature=<hex>'."
            )
        action = self._check_action(headers.get("x-tc-action"), headers.get("x-tc-version"), "X-TC-")
        timestamp = self._check_timestamp(headers.get("x-tc-timestamp"), "X-TC-Timestamp")
        secret_key = self._check_secret_id(auth.secret_id)
        if headers.get("x-tc-token"):
            raise errors.TokenFailure()
        host = headers.get("host", "")
        if auth.service not in signing.signing_services(host) or auth.date != signing.utc_date(timestamp):
            raise errors.SignatureFailure("The credential scope must be <UTC date of X-TC-Timestamp>/mps/tc3_request.")
        body_hash = signing.sha256_hex(request.body)
        unsigned = headers.get("x-tc-content-sha256") == signing.UNSIGNED_PAYLOAD
        payload_hash = signing.sha256_hex(signing.UNSIGNED_PAYLOAD.encode()) if unsigned else body_hash
        query = request.query if request.method == "GET" else ""
        if not self._tc3_matches(request.method, query, headers, auth, payload_hash, secret_key, timestamp):
            raise errors.SignatureFailure()
        if unsigned and not self._allow_unsigned_payload:
            raise errors.UnsupportedOperation(
                "Requests signed with X-TC-Content-SHA256: UNSIGNED-PAYLOAD are refused here: their signature does "
                "not cover the body, so a captured request could carry any other body. Sign the body (the SDKs' "
                "default), or ask the operator to set api.allow_unsigned_payload = true."
            )
        return Call(
            secret_id=auth.secret_id,
            action=action,
            params=self._tc3_params(request, self._limits),
            from_strings=request.method == "GET" or request.content_type == FORM_TYPE,
            # The signature covers method, query, signed headers, timestamp and (unless
            # UNSIGNED-PAYLOAD) the body; the body's own hash covers that exception. The SDKs
            # send a fresh X-TC-TraceId with every call, so two calls in one second with the
            # same parameters stay two tasks, while a byte-identical replay stays one.
            fingerprint=_fingerprint(request.method, query, auth.signature, body_hash, headers.get("x-tc-traceid", "")),
        )

    @staticmethod
    def _tc3_matches(
        method: str,
        query: str,
        headers: Mapping[str, str],
        auth: signing.Tc3Authorization,
        payload_hash: str,
        secret_key: str,
        timestamp: int,
    ) -> bool:
        as_sent = {name: headers.get(name, "") for name in auth.signed_headers}
        for values in signing.canonical_header_values(as_sent):
            canonical = signing.tc3_canonical_request(method, query, values, auth.signed_headers, payload_hash)
            expected = signing.tc3_signature(secret_key, timestamp, auth.service, canonical)
            if hmac.compare_digest(expected, auth.signature):
                return True
        return False

    @staticmethod
    def _tc3_params(request: RawRequest, limits: ParseLimits) -> dict[str, Any]:
        if request.method == "GET":
            return p.unflatten(_parse_query(request.query), limits)
        if request.content_type == JSON_TYPE:
            return p.parse_json_body(request.body, limits)
        if request.content_type == FORM_TYPE:
            return p.unflatten(_parse_query(_decode(request.body)), limits)
        raise errors.InvalidParameter(f"Unsupported Content-Type {request.content_type!r}; send application/json.")

    # -- signature v1 (HmacSHA1 / HmacSHA256) ------------------------------------------

    def _v1(self, request: RawRequest) -> Call:
        if request.method == "GET":
            source = request.query
        elif request.content_type == FORM_TYPE:
            source = _decode(request.body)
        else:
            raise errors.InvalidAuthorization(
                "The Authorization header is missing; JSON requests must be signed with TC3-HMAC-SHA256."
            )
        pairs = _parse_query(source)
        values = dict(pairs)
        if len(values) != len(pairs):
            raise errors.InvalidParameter("A parameter is given more than once.")
        if "Signature" not in values or "SecretId" not in values:
            raise errors.InvalidAuthorization(
                "The request is not signed: send an Authorization header (TC3-HMAC-SHA256) "
                "or the SecretId and Signature parameters (HmacSHA1/HmacSHA256)."
            )
        action = self._check_action(values.get("Action"), values.get("Version"), "")
        self._check_timestamp(values.get("Timestamp"), "Timestamp")
        if not _DIGITS.fullmatch(values.get("Nonce", "")):
            raise errors.MissingParameter("The Nonce parameter (a positive integer) is required.")
        secret_key = self._check_secret_id(values["SecretId"])
        if values.get("Token"):
            raise errors.TokenFailure()
        method = values.get("SignatureMethod", "HmacSHA1")
        if method not in signing.V1_METHODS:
            raise errors.InvalidParameterValue(
                f"SignatureMethod must be {' or '.join(signing.V1_METHODS)}; got {method[:40]!r}."
            )
        string_to_sign = signing.v1_string_to_sign(request.method, request.headers.get("host", ""), values)
        expected = signing.v1_signature(secret_key, string_to_sign, method)
        if not hmac.compare_digest(expected.encode(), values["Signature"].encode()):
            raise errors.SignatureFailure()
        action_pairs = [(k, v) for k, v in pairs if k not in _V1_COMMON]
        return Call(
            secret_id=values["SecretId"],
            action=action,
            params=p.unflatten(action_pairs, self._limits),
            from_strings=True,
            fingerprint=_fingerprint(request.method, string_to_sign, values["Signature"]),
        )

    # -- shared checks ------------------------------------------------------------------

    def _check_action(self, action: str | None, version: str | None, prefix: str) -> str:
        if not action:
            raise errors.MissingParameter(f"The {prefix}Action parameter is required.")
        if not version:
            raise errors.MissingParameter(f"The {prefix}Version parameter is required.")
        if version != API_VERSION:
            raise errors.NoSuchVersion(f"API version {version!r} does not exist; use {API_VERSION}.")
        if action not in self._actions:
            raise errors.InvalidAction(f"The action {action!r} does not exist.")
        return action

    def _check_timestamp(self, value: str | None, name: str) -> int:
        if not value:
            raise errors.MissingParameter(f"The {name} parameter is required.")
        if not _DIGITS.fullmatch(value) or len(value) > 12:
            raise errors.InvalidParameter(f"{name} must be an integer number of UNIX seconds.")
        timestamp = int(value)
        if abs(self._now() - timestamp) > self._window:
            raise errors.SignatureExpire(
                f"The request timestamp {timestamp} differs from server time by more than {self._window} seconds."
            )
        return timestamp

    def _check_secret_id(self, secret_id: str) -> str:
        if not _SECRET_ID.fullmatch(secret_id):
            raise errors.InvalidSecretId()
        secret_key = self._secret_for(secret_id)
        if secret_key is None:
            raise errors.SecretIdNotFound()
        return secret_key


def _fingerprint(*parts: str) -> str:
    # 128 bits: collisions are out of reach, and the store's unique index stays small.
    return signing.sha256_hex("\n".join(parts).encode("utf-8"))[:32]


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidParameter("The form body is not valid UTF-8.") from None


def _parse_query(text: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidParameter("The query string is not valid UTF-8 percent-encoding.") from None
