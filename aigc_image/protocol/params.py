"""Action parameters: declared shapes, JSON parsing, form/query un-flattening, type checks.

JSON bodies must carry the declared JSON types. Form bodies and query strings carry
only strings, flattened as ``A.B`` and ``A.N.B`` (zero-based list indices), with
Python-style ``True``/``False`` booleans; they are rebuilt and coerced against the
same declarations, so both paths yield identical dictionaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aigc_image.bounded import InputRefused, ParseLimits, check_text, load_json
from aigc_image.protocol.errors import InvalidParameter, UnknownParameter

Kind = Literal["string", "integer", "boolean", "object", "array"]

_INTEGER = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only: int() also takes "٣" and "３"
_INDEX = re.compile(r"[0-9]{1,9}")
_BOOLEANS = {"true": True, "false": False}
DEFAULT_LIMITS = ParseLimits()


@dataclass(frozen=True)
class Param:
    """The declared type of one parameter; objects list their fields, arrays their item."""

    kind: Kind
    fields: Mapping[str, Param] = field(default_factory=dict)
    item: Param | None = None


STRING = Param("string")
INTEGER = Param("integer")
BOOLEAN = Param("boolean")


def obj(**fields: Param) -> Param:
    return Param("object", fields=fields)


def array(item: Param) -> Param:
    return Param("array", item=item)


def parse_json_body(body: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode a JSON body within ``limits``; an empty body is an empty parameter set."""
    if not body.strip():
        return {}
    try:
        data = load_json(body, limits)
    except InputRefused as exc:
        raise InvalidParameter(str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidParameter("The request body must be a JSON object.")
    return data


def unflatten(pairs: Iterable[tuple[str, str]], limits: ParseLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Rebuild nested parameters from ``A.B`` / ``A.N.B`` keys; lists come out as lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        if any(not p for p in parts):
            raise InvalidParameter(f"Malformed parameter name {key[:100]!r}.")
        if len(parts) > limits.max_depth:
            raise InvalidParameter(f"Parameter names are nested at most {limits.max_depth} levels deep.")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidParameter(f"Parameter {key[:100]!r} conflicts with a scalar of the same prefix.")
            node = child
        if parts[-1] in node:
            raise InvalidParameter(f"Parameter {key[:100]!r} is given more than once.")
        node[parts[-1]] = value
    result: dict[str, Any] = _lists_from_indices(root, "")
    return result


def _lists_from_indices(node: Any, path: str) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(_INDEX.fullmatch(k) for k in node):
        indices = sorted(int(k) for k in node)
        if indices != list(range(len(indices))):
            raise InvalidParameter(f"Indices of list parameter {path} must run 0, 1, 2, ... without gaps.")
        return [_lists_from_indices(node[str(i)], f"{path}.{i}") for i in indices]
    return {k: _lists_from_indices(v, f"{path}.{k}" if path else k) for k, v in node.items()}


def check(
    fields: Mapping[str, Param], data: Mapping[str, Any], *, from_strings: bool, limits: ParseLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Validate ``data`` against declared ``fields``; returns typed values (None dropped).

    Unknown names raise UnknownParameter, wrong types InvalidParameter, and a string that breaks
    the one rule for text (bounded.check_text: length, NUL, lone surrogates) InvalidParameter too.
    ``from_strings`` coerces the string leaves of a form/query request to the declared scalar types.
    """
    return _check_object(fields, data, "", from_strings, limits)


def _check_object(
    fields: Mapping[str, Param], data: Mapping[str, Any], prefix: str, from_strings: bool, limits: ParseLimits
) -> dict[str, Any]:
    unknown = [name for name in data if name not in fields]
    if unknown:
        name = f"{prefix}{unknown[0]}"[:100]
        raise UnknownParameter(f"Unknown parameter {name}; this action does not define it.", param=name)
    result = {}
    for name, value in data.items():
        if value is None:
            continue
        result[name] = _check_value(fields[name], value, f"{prefix}{name}", from_strings, limits)
    return result


def _check_value(param: Param, value: Any, path: str, from_strings: bool, limits: ParseLimits) -> Any:
    if param.kind == "object":
        if not isinstance(value, dict):
            raise InvalidParameter(f"Parameter {path} must be an object.", param=path)
        return _check_object(param.fields, value, f"{path}.", from_strings, limits)
    if param.kind == "array":
        assert param.item is not None
        if not isinstance(value, list):
            raise InvalidParameter(f"Parameter {path} must be an array.", param=path)
        return [_check_value(param.item, v, f"{path}.{i}", from_strings, limits) for i, v in enumerate(value)]
    if isinstance(value, str):
        try:
            check_text(value, limits, f"Parameter {path}")
        except InputRefused as exc:
            raise InvalidParameter(str(exc), param=path) from None
    if from_strings and isinstance(value, str):
        return _coerce_string(param, value, path)
    if param.kind == "string" and isinstance(value, str):
        return value
    if param.kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if param.kind == "boolean" and isinstance(value, bool):
        return value
    raise InvalidParameter(f"Parameter {path} must be of type {param.kind}, got {_json_type(value)}.", param=path)


def _coerce_string(param: Param, value: str, path: str) -> Any:
    if param.kind == "string":
        return value
    if param.kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if param.kind == "boolean" and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise InvalidParameter(f"Parameter {path} must be of type {param.kind}, got {value[:100]!r}.", param=path)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"
