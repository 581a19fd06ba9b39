"""The bounded JSON loader: refuses what breaks a limit, and nothing that only looks like it does."""

from __future__ import annotations

import json

import pytest

from aigc_image.bounded import InputRefused, ParseLimits, load_json

LIMITS = ParseLimits(max_depth=4, max_number_digits=5, max_string_chars=20)


@pytest.mark.parametrize(
    "text",
    [
        '{"p": "a run of digits in text: 12345678901234567890"}',  # digits, but not a number
        '{"p": "[[[[[[{{{{{{"}',  # brackets, but not nesting
        r'{"p": "not a NUL: \\u0000"}',  # an escaped backslash, then text
        '{"p": "é中文"}',  # non-ASCII, all of it valid
        "[[[1]]]",
        '{"n": -12345, "f": 1.5e3}',
    ],
)
def test_what_only_looks_hostile_is_accepted(text: str) -> None:
    assert load_json(text, ParseLimits(max_depth=4, max_number_digits=5, max_string_chars=60)) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[[[[1]]]]]", "nested more than 4"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 4"),
        ('{"n": 123456}', "6 digits"),
        ('{"n": ' + "9" * 5000 + "}", "5000 digits"),
        ('{"f": 1.23456e1}', "7 digits"),  # no run of 6 digits, but 7 digits in all
        ('{"f": -1.2e-3456}', "6 digits"),
        ('{"p": "' + "x" * 21 + '"}', "21 characters"),
        ('{"' + "k" * 21 + '": 1}', "21 characters"),
        (r'{"p": "a\u0000b"}', "NUL"),
        (r'["\ud800"]', "surrogate"),
        ('{"n": NaN}', "NaN"),
        ("{not json", "not valid JSON"),
    ],
)
def test_what_breaks_a_limit_is_refused_saying_which(text: str, fragment: str) -> None:
    with pytest.raises(InputRefused, match=fragment):
        load_json(text, LIMITS)
