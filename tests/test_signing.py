"""The official signing test vectors (docs and SDK captures) as unit tests."""

from __future__ import annotations

from aigc_image.protocol import signing

VECTOR_B_BODY = b'{"ModelName": "Hunyuan", "ModelVersion": "3.0", "Prompt": "draw a cat", "OutputImageCount": 1}'


def test_vector_a_official_cvm_example() -> None:
    body = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    payload_hash = signing.sha256_hex(body)
    assert payload_hash == "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    canonical = signing.tc3_canonical_request(
        "POST",
        "",
        {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"},
        ["content-type", "host"],
        payload_hash,
    )
    assert signing.sha256_hex(canonical.encode()) == "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    signature = signing.tc3_signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", 1551113065, "cvm", canonical)
    assert signature == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


def _vector_b(host: str) -> tuple[str, str]:
    canonical = signing.tc3_canonical_request(
        "POST",
        "",
        {"content-type": "application/json", "host": host},
        ["content-type", "host"],
        signing.sha256_hex(VECTOR_B_BODY),
    )
    string_to_sign = signing.tc3_string_to_sign(1700000000, "mps", canonical)
    return string_to_sign, signing.tc3_signature("EXAMPLEKEY", 1700000000, "mps", canonical)


def test_vector_b_sdk_capture_for_mps() -> None:
    string_to_sign, signature = _vector_b("mps.tencentcloudapi.com")
    assert signing.sha256_hex(VECTOR_B_BODY) == "175d7096a159b95e4a71d93f26072a5d8456f2ab1c4179ad7b1a5eb09f86ee53"
    assert string_to_sign.splitlines() == [
        "TC3-HMAC-SHA256",
        "1700000000",
        "2023-11-14/mps/tc3_request",
        "98b20cb9888469a166d0f28db45b7094a890f96429ededc995c51a4cb14f5227",
    ]
    assert signature == "4b6948918ee33a847cbe267c22f28815d8b83d31909a15d118cb4787a0de6fb1"


def test_vector_b_with_local_endpoint() -> None:
    string_to_sign, signature = _vector_b("127.0.0.1:8000")
    assert string_to_sign.endswith("4fdb6f309a9db0ffe55f0e0b50ca6aa3dc351d9ac22c6b7459fd3d7b6564b7c3")
    assert signature == "554d46b38216d1c5ea9997d908b92128bbd4149d6a017f38df51aa1efa504bea"


def test_vector_c_v1_hmacsha1_official_example() -> None:
    string = (
        "GETcvm.tencentcloudapi.com/?Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Limit=20&Nonce=11886"
        "&Offset=0&Region=ap-guangzhou&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Timestamp=1465185768"
        "&Version=2017-03-12"
    )
    assert (
        signing.v1_signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", string, "HmacSHA1") == "EliP9YW3pW28FpsEdkXt/+WcGeI="
    )


def test_v1_string_to_sign_sorts_names_and_leaves_out_signature() -> None:
    params = {"Nonce": "1", "Action": "X", "InstanceIds.12": "b", "InstanceIds.2": "a", "Signature": "zzz"}
    assert signing.v1_string_to_sign("POST", "h:1", params) == (
        "POSTh:1/?Action=X&InstanceIds.12=b&InstanceIds.2=a&Nonce=1"
    )


def test_parse_authorization_round_trips_what_the_client_signs() -> None:
    headers = signing.sign_tc3_headers(
        secret_id="AKIDx", secret_key="k", action="A", body=b"{}", host="h", timestamp=1700000000
    )
    parsed = signing.parse_tc3_authorization(headers["Authorization"])
    assert parsed is not None
    assert (parsed.secret_id, parsed.date, parsed.service) == ("AKIDx", "2023-11-14", "mps")
    assert parsed.signed_headers == ["content-type", "host"]


def test_parse_authorization_rejects_malformed_headers() -> None:
    good = (
        "TC3-HMAC-SHA256 Credential=AKID/2023-11-14/mps/tc3_request, SignedHeaders=content-type;host, Signature="
        + "a" * 64
    )
    assert signing.parse_tc3_authorization(good) is not None
    for bad in [
        "",
        "Bearer abc",
        good.replace("TC3-HMAC-SHA256", "TC3-HMAC-SHA1"),
        good.replace("Credential=", "Cred="),
        good.replace("/tc3_request", "/tc4_request"),
        good.replace("content-type;host", "host"),
        good.replace("content-type;host", "host;content-type"),
        good.replace("a" * 64, "a" * 63),
        good.replace(", Signature=", " Signature="),
    ]:
        assert signing.parse_tc3_authorization(bad) is None, bad
