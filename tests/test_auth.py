"""Request authentication, check by check, with a clock the tests control."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from aigc_image.clock import ManualClock
from aigc_image.protocol import errors, signing
from aigc_image.protocol.auth import Authenticator, RawRequest

KEYS = {"AKIDgood": "secret"}
NOW = 1_800_000_000


def authenticator(window: int = 300, allow_unsigned_payload: bool = False) -> Authenticator:
    clock = ManualClock(NOW)
    actions = {"CreateAigcImageTask", "DescribeAigcImageTask"}
    return Authenticator(KEYS.get, actions, clock.now, window, allow_unsigned_payload)


def tc3(
    body: bytes = b'{"Prompt": "x"}',
    *,
    secret_id: str = "AKIDgood",
    secret_key: str = "secret",
    host: str = "127.0.0.1:8000",
    timestamp: int = NOW,
    sent_host: str = "",
    **overrides: str,
) -> RawRequest:
    """A TC3-signed request; ``sent_host`` sends a Host other than the signed one."""
    headers = signing.sign_tc3_headers(
        secret_id=secret_id, secret_key=secret_key, action="CreateAigcImageTask", body=body, host=host,
        timestamp=timestamp,
    )  # fmt: skip
    lower = {k.lower(): v for k, v in headers.items()}
    lower.update({k.lower().replace("_", "-"): v for k, v in overrides.items()})
    lower["host"] = sent_host or host
    return RawRequest("POST", "", lower, body)


def v1(method: str = "POST", signature_method: str = "HmacSHA256", **params: str) -> RawRequest:
    values = {
        "Action": "CreateAigcImageTask", "Version": "2019-06-12", "Timestamp": str(NOW), "Nonce": "42",
        "SecretId": "AKIDgood", "SignatureMethod": signature_method, "Prompt": "a cat 猫 + &", **params,
    }  # fmt: skip
    string = signing.v1_string_to_sign(method, "127.0.0.1:8000", values)
    values.setdefault("Signature", signing.v1_signature("secret", string, signature_method))
    encoded = urlencode(values)
    headers = {"host": "127.0.0.1:8000", "content-type": "application/x-www-form-urlencoded"}
    if method == "GET":
        return RawRequest("GET", encoded, headers, b"")
    return RawRequest("POST", "", headers, encoded.encode())


def test_tc3_post_is_accepted_and_parsed() -> None:
    call = authenticator().authenticate(tc3())
    assert (call.secret_id, call.action, call.params, call.from_strings) == (
        "AKIDgood", "CreateAigcImageTask", {"Prompt": "x"}, False,
    )  # fmt: skip


def test_tc3_signs_the_raw_host_header_as_tccli_sends_it() -> None:
    call = authenticator().authenticate(tc3(host="http://127.0.0.1:8000"))
    assert call.action == "CreateAigcImageTask"


def test_tc3_unsigned_payload_is_refused_unless_the_operator_allows_it() -> None:
    """Its signature does not cover the body: a captured request could carry any other body."""
    request = tc3()
    headers = dict(request.headers, **{"x-tc-content-sha256": "UNSIGNED-PAYLOAD"})
    # Re-sign over the UNSIGNED-PAYLOAD hash, as the SDK does with unsignedPayload=True.
    canonical = signing.tc3_canonical_request(
        "POST", "", headers, ["content-type", "host"], signing.sha256_hex(b"UNSIGNED-PAYLOAD")
    )
    signature = signing.tc3_signature("secret", NOW, "mps", canonical)
    headers["authorization"] = headers["authorization"][:-64] + signature
    other_body = RawRequest("POST", "", headers, b'{"Prompt": "other body"}')
    with pytest.raises(errors.UnsupportedOperation, match=r"api\.allow_unsigned_payload"):
        authenticator().authenticate(other_body)
    assert authenticator(allow_unsigned_payload=True).authenticate(other_body).params == {"Prompt": "other body"}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"authorization": "Signature=" + "ä" * 64}, errors.InvalidAuthorization),  # non-ASCII signature
        ({"x-tc-timestamp": "\u00b2"}, errors.InvalidParameter),  # "²": isdigit() says yes, int() says no
        ({"x-tc-timestamp": "\u0663" * 10}, errors.InvalidParameter),  # Arabic-Indic digits
    ],
)
def test_malformed_tc3_headers_get_their_code_not_an_internal_error(change: dict[str, str], error: type) -> None:
    request = tc3()
    headers = dict(request.headers)
    for name, value in change.items():
        headers[name] = headers[name].rsplit("Signature=", 1)[0] + value if name == "authorization" else value
    with pytest.raises(error):
        authenticator().authenticate(RawRequest("POST", "", headers, request.body))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("Timestamp", "\u00b2", errors.InvalidParameter),
        ("Nonce", "\u00b2", errors.MissingParameter),
        ("SignatureMethod", "HmacMD5", errors.InvalidParameterValue),  # refused, not verified as SHA1
    ],
)
def test_malformed_v1_parameters_get_their_code(field: str, value: str, error: type) -> None:
    with pytest.raises(error):
        authenticator().authenticate(v1("POST", "HmacSHA1", **{field: value}))


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("signature_method", ["HmacSHA1", "HmacSHA256"])
def test_v1_form_and_query_are_accepted(method: str, signature_method: str) -> None:
    request = v1(method, signature_method, **{"ExtraParameters.OutputFormat": "png", "EnhancePrompt": "False"})
    call = authenticator().authenticate(request)
    assert call.from_strings
    assert call.params == {
        "Prompt": "a cat 猫 + &",
        "ExtraParameters": {"OutputFormat": "png"},
        "EnhancePrompt": "False",
    }


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (tc3(authorization="Bearer nope"), "AuthFailure.InvalidAuthorization"),
        (RawRequest("POST", "", {"content-type": "application/json"}, b"{}"), "AuthFailure.InvalidAuthorization"),
        (v1(Signature=""), "AuthFailure.SignatureFailure"),
        (tc3(x_tc_action="Nope"), "InvalidAction"),
        (tc3(x_tc_action=""), "MissingParameter"),
        (tc3(x_tc_version="2017-03-12"), "NoSuchVersion"),
        (tc3(timestamp=NOW - 301), "AuthFailure.SignatureExpire"),
        (tc3(timestamp=NOW + 301), "AuthFailure.SignatureExpire"),
        (tc3(x_tc_timestamp="soon"), "InvalidParameter"),
        (tc3(secret_id="AKID bad!"), "AuthFailure.InvalidSecretId"),
        (tc3(secret_id="AKIDunknown"), "AuthFailure.SecretIdNotFound"),
        (tc3(x_tc_token="temporary"), "AuthFailure.TokenFailure"),
        (tc3(secret_key="wrong"), "AuthFailure.SignatureFailure"),
        (tc3(sent_host="evil.example"), "AuthFailure.SignatureFailure"),
        (v1(Timestamp=str(NOW - 1000)), "AuthFailure.SignatureExpire"),
        (v1(SecretId="AKIDunknown"), "AuthFailure.SecretIdNotFound"),
        (v1(Version="2020-01-01"), "NoSuchVersion"),
        (v1(Nonce=""), "MissingParameter"),
    ],
)
def test_each_failure_has_its_code(request_: RawRequest, code: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        authenticator().authenticate(request_)
    assert caught.value.code == code


def test_a_changed_body_fails_the_signature() -> None:
    request = tc3()
    tampered = RawRequest(request.method, request.query, request.headers, b'{"Prompt": "y"}')
    with pytest.raises(errors.SignatureFailure):
        authenticator().authenticate(tampered)


def test_a_changed_v1_parameter_fails_the_signature() -> None:
    request = v1("GET")
    with pytest.raises(errors.SignatureFailure):
        authenticator().authenticate(RawRequest("GET", request.query.replace("cat", "dog"), request.headers, b""))


def test_scope_date_must_match_the_timestamp() -> None:
    request = tc3()
    headers = dict(request.headers)
    headers["authorization"] = headers["authorization"].replace(signing.utc_date(NOW), "2020-01-01")
    with pytest.raises(errors.SignatureFailure):
        authenticator().authenticate(RawRequest("POST", "", headers, request.body))


def test_json_body_must_be_an_object() -> None:
    with pytest.raises(errors.InvalidParameter):
        authenticator().authenticate(tc3(json.dumps([1, 2]).encode()))
    with pytest.raises(errors.InvalidParameter):
        authenticator().authenticate(tc3(b"{not json"))


def test_upper_case_host_signed_either_way_is_accepted() -> None:
    assert authenticator().authenticate(tc3(host="LOCALHOST:8000")).action == "CreateAigcImageTask"
    request = tc3(host="localhost:8000", sent_host="LOCALHOST:8000")  # signer lower-cased, as the docs do
    assert authenticator().authenticate(request).action == "CreateAigcImageTask"
