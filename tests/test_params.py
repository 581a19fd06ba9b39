from __future__ import annotations

import pytest

from aigc_image.protocol import errors
from aigc_image.protocol import params as p
from aigc_image.protocol.validation import CREATE_PARAMS


def test_unflatten_rebuilds_objects_and_lists() -> None:
    pairs = [
        ("Prompt", "a"),
        ("ImageInfos.0.ImageUrl", "u0"),
        ("ImageInfos.1.ImageUrl", "u1"),
        ("ExtraParameters.AspectRatio", "16:9"),
    ]
    assert p.unflatten(pairs) == {
        "Prompt": "a",
        "ImageInfos": [{"ImageUrl": "u0"}, {"ImageUrl": "u1"}],
        "ExtraParameters": {"AspectRatio": "16:9"},
    }


@pytest.mark.parametrize(
    "pairs",
    [
        [("A.0", "x"), ("A.2", "y")],  # gap
        [("A", "x"), ("A.B", "y")],  # scalar and object
        [("A", "x"), ("A", "y")],  # duplicate
        [("A..B", "x")],  # empty segment
    ],
)
def test_unflatten_rejects_malformed_names(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(errors.InvalidParameter):
        p.unflatten(pairs)


def test_form_strings_are_coerced_like_json() -> None:
    form = p.unflatten(
        [("OutputImageCount", "2"), ("EnhancePrompt", "False"), ("ExtraParameters.LogoAdd", "0"), ("Prompt", "7")]
    )
    as_json = {"OutputImageCount": 2, "EnhancePrompt": False, "ExtraParameters": {"LogoAdd": 0}, "Prompt": "7"}
    assert p.check(CREATE_PARAMS, form, from_strings=True) == as_json
    assert p.check(CREATE_PARAMS, as_json, from_strings=False) == as_json
    assert p.check(CREATE_PARAMS, {"EnhancePrompt": "true"}, from_strings=True) == {"EnhancePrompt": True}


@pytest.mark.parametrize(
    ("data", "from_strings", "code"),
    [
        ({"OutputImageCount": "2"}, False, "InvalidParameter"),
        ({"OutputImageCount": 2.0}, False, "InvalidParameter"),
        ({"OutputImageCount": True}, False, "InvalidParameter"),
        ({"OutputImageCount": "two"}, True, "InvalidParameter"),
        ({"EnhancePrompt": "yes"}, True, "InvalidParameter"),
        ({"EnhancePrompt": 1}, False, "InvalidParameter"),
        ({"Prompt": ["a"]}, False, "InvalidParameter"),
        ({"ExtraParameters": "png"}, False, "InvalidParameter"),
        ({"ImageInfos": {"ImageUrl": "u"}}, False, "InvalidParameter"),
        ({"Foo": 1}, False, "UnknownParameter"),
        ({"ExtraParameters": {"Colour": "red"}}, False, "UnknownParameter"),
        ({"ImageInfos": [{"ImageUrl": "u", "Weight": 1}]}, False, "UnknownParameter"),
    ],
)
def test_wrong_types_and_unknown_names(data: dict[str, object], from_strings: bool, code: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        p.check(CREATE_PARAMS, data, from_strings=from_strings)
    assert caught.value.code == code


def test_unknown_parameter_message_names_the_path() -> None:
    with pytest.raises(errors.UnknownParameter, match=r"ExtraParameters\.Colour"):
        p.check(CREATE_PARAMS, {"ExtraParameters": {"Colour": "red"}}, from_strings=False)


def test_null_values_are_treated_as_absent() -> None:
    assert p.check(CREATE_PARAMS, {"Prompt": "a", "ModelName": None}, from_strings=False) == {"Prompt": "a"}
