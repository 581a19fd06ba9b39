"""Parsing with limits: JSON from clients and TOML from the operator's files, never unbounded.

Python's parsers have no limits of their own that fail cleanly: ``json`` recurses until
``RecursionError``, ``int()`` refuses more than 4,300 digits with a ``ValueError`` that is not a
decode error, and nothing bounds a string. Every face parses client JSON through ``load_json``
(bodies, ``AdditionalParameters``, form fields), and config.py and the catalogue read their files
through ``check_structure``, so the same limits hold everywhere:

* nesting depth (objects and arrays, ``ParseLimits.max_depth``);
* digits of a number (``max_number_digits``), checked before Python converts it;
* characters of a string or an object key (``max_string_chars``);
* and text every string parameter may hold: no NUL (PostgreSQL cannot store it, C libraries
  stop at it) and no lone surrogate (no encoding can store it), checked by ``check_text``.

A refusal is an ``InputRefused``; each face answers it with its own client error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aigc_image.errors import ServiceError


@dataclass(frozen=True)
class ParseLimits:
    max_depth: int = 32
    max_number_digits: int = 32
    max_string_chars: int = 16 * 1024


class InputRefused(ServiceError):
    """Input that exceeds a parser limit or holds text no parameter may hold. Raised before
    anything is created, so never stored with a task; each face answers it as the client's error."""

    permanent = True


def load_json(data: bytes | str, limits: ParseLimits, what: str = "The request body") -> Any:
    """``data`` parsed as strict JSON (no NaN or Infinity) within ``limits``.

    Cheap scans of the raw text first decide which checks can fail at all: a body with fewer
    brackets than the depth limit cannot be too deep, one without a long run of digits cannot hold
    a long number, one shorter than the string limit and without a NUL or surrogate escape cannot
    hold a bad string. Most bodies need none of the walks, and those that do get them.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data

    def number(text: str) -> str:
        digits = sum(char.isdigit() for char in text)
        if digits > limits.max_number_digits:
            raise InputRefused(f"{what} holds a number of {digits} digits; the limit is {limits.max_number_digits}.")
        return text

    def constant(name: str) -> Any:
        raise InputRefused(f"{what} is not valid JSON: {name} is not a JSON number.")

    hooks: dict[str, Any] = {}  # json.loads is several times faster without any
    if b"NaN" in raw or b"Infinity" in raw:
        hooks["parse_constant"] = constant
    if b"0" * (limits.max_number_digits + 1) in raw.translate(_DIGITS_AS_ZERO):  # a long run of digits somewhere:
        # only then can a number be too long, so only then is each one's length counted
        hooks.update(parse_int=lambda text: int(number(text)), parse_float=lambda text: float(number(text)))
    try:
        value = json.loads(data, **hooks)
    except RecursionError:
        raise InputRefused(f"{what} is nested more than {limits.max_depth} levels deep.") from None
    except json.JSONDecodeError as exc:
        raise InputRefused(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputRefused(f"{what} is not valid JSON: {exc}.") from None
    deep = raw.count(b"[") + raw.count(b"{") > limits.max_depth
    suspect = b"\\u" in raw and _SUSPECT_ESCAPE.search(raw) is not None
    texts = len(raw) > limits.max_string_chars or suspect or not raw.isascii()
    if (deep or texts) and not _within(value, limits):
        check_structure(value, limits, what)  # the slow walk, which says where
    return value


# Every byte a JSON number can hold, as "0": a number with more than N digits is a run of more
# than N zeros after this (so is some ordinary text, which only costs the count of each number).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789.eE+-", b"0" * 14)
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")  # an escaped NUL or surrogate half


def _within(value: Any, limits: ParseLimits) -> bool:
    """Whether ``value`` keeps every limit: the fast walk, with no paths to build."""
    if type(value) is str:
        return _good_text(value, limits)
    pending: list[tuple[Any, int]] = [(value, 0)] if type(value) in (dict, list) else []
    while pending:
        node, depth = pending.pop()
        if depth >= limits.max_depth:
            return False
        children = node.values() if type(node) is dict else node
        if type(node) is dict and not all(_good_text(key, limits) for key in node):
            return False
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                pending.append((child, depth + 1))
            elif kind is str and not _good_text(child, limits):
                return False
    return True


def _good_text(text: str, limits: ParseLimits) -> bool:
    if len(text) > limits.max_string_chars or "\x00" in text:
        return False
    return text.isascii() or _encodable(text)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_structure(value: Any, limits: ParseLimits, what: str) -> None:
    """Depth, string lengths and text of a parsed document, InputRefused saying where the first
    fault is (iteratively: no recursion to exhaust)."""
    if not isinstance(value, dict | list):
        if isinstance(value, str):
            check_text(value, limits, what)
        return
    pending: list[tuple[Any, int, str]] = [(value, 0, "")]
    while pending:
        node, depth, path = pending.pop()
        if isinstance(node, dict | list):
            if depth >= limits.max_depth:
                raise InputRefused(f"{what} is nested more than {limits.max_depth} levels deep.")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    check_text(key, limits, f"{what}: a key of {path or 'the top level'}")
                name = str(key)[:40]  # paths go into messages: bounded too
                pending.append((child, depth + 1, f"{path}.{name}" if path else name))
        elif isinstance(node, str):
            check_text(node, limits, f"{what}: {path}" if path else what)


def check_text(text: str, limits: ParseLimits, where: str) -> None:
    """The one rule for any string a client sends: bounded, no NUL, valid Unicode."""
    if len(text) > limits.max_string_chars:
        raise InputRefused(f"{where} is {len(text)} characters long; the limit is {limits.max_string_chars}.")
    if "\x00" in text:
        raise InputRefused(f"{where} must not contain NUL characters.")
    if not text.isascii() and not _encodable(text):
        raise InputRefused(f"{where} is not valid Unicode text (it holds a lone surrogate).")
