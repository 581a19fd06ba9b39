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
    """``data`` parsed as strict JSON (no NaN or Infinity) within ``limits``."""

    def number(text: str) -> str:
        digits = sum(char.isdigit() for char in text)
        if digits > limits.max_number_digits:
            raise InputRefused(f"{what} holds a number of {digits} digits; the limit is {limits.max_number_digits}.")
        return text

    def constant(name: str) -> Any:
        raise InputRefused(f"{what} is not valid JSON: {name} is not a JSON number.")

    try:
        value = json.loads(
            data,
            parse_int=lambda text: int(number(text)),
            parse_float=lambda text: float(number(text)),
            parse_constant=constant,
        )
    except RecursionError:
        raise InputRefused(f"{what} is nested more than {limits.max_depth} levels deep.") from None
    except json.JSONDecodeError as exc:
        raise InputRefused(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputRefused(f"{what} is not valid JSON: {exc}.") from None
    check_structure(value, limits, what)
    return value


def check_structure(value: Any, limits: ParseLimits, what: str) -> None:
    """Depth, string lengths and text of a parsed document (iteratively: no recursion to exhaust)."""
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
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputRefused(f"{where} is not valid Unicode text (it holds a lone surrogate).") from None
