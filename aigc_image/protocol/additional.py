"""``AdditionalParameters``: a JSON object serialised into a string, as the MPS API defines it.

Keys: ``size`` ("WxH", as the MPS documentation's Hunyuan and Qwen examples) and this server's
documented extensions ``seed``, ``steps``, ``guidance_scale``, ``strength`` (image-to-image),
``sampler`` (a name as A1111 writes it) and ``loras`` (adapter name → scale). Which samplers and
adapters a model offers is its catalogue entry's business (validation.py checks them).
Anything else is refused: a parameter that would be silently ignored is worse than an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from aigc_image.bounded import InputRefused, ParseLimits, load_json
from aigc_image.catalog import MAX_LORA_SCALE
from aigc_image.protocol import errors
from aigc_image.protocol.params import DEFAULT_LIMITS

KEYS = ("size", "seed", "steps", "guidance_scale", "strength", "sampler", "loras")
MAX_SEED = 2**32 - 1
MAX_STEPS = 1000  # the schedulers' own limit; each model's catalogue entry sets its own (max_steps)
MAX_GUIDANCE_SCALE = 50.0
_SIZE = re.compile(r"([0-9]{1,5})[x*×]([0-9]{1,5})")  # ASCII digits: \d would take "٥١٢" too


@dataclass(frozen=True)
class Additional:
    size: tuple[int, int] | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    strength: float | None = None
    sampler: str | None = None
    loras: dict[str, float] | None = None


def parse_additional(text: str, limits: ParseLimits = DEFAULT_LIMITS) -> Additional:
    if not text.strip():
        return Additional()
    try:
        data = load_json(text, limits, "AdditionalParameters")
    except InputRefused as exc:
        raise errors.InvalidParameter(
            f'{exc} It must be a JSON object in a string, e.g. "{{\\"size\\":\\"1024x1024\\"}}".',
            param="AdditionalParameters",
        ) from None
    if not isinstance(data, dict):
        raise errors.InvalidParameter(
            'AdditionalParameters must be a JSON object, e.g. {"size":"1024x1024"}.', param="AdditionalParameters"
        )
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise errors.InvalidParameter(
            f"AdditionalParameters has unknown key(s) {', '.join(repr(key[:40]) for key in unknown[:5])}; "
            f"supported: {', '.join(KEYS)}.",
            param="AdditionalParameters",
        )
    return Additional(
        size=_size(data["size"]) if "size" in data else None,
        seed=_integer(data, "seed", 0, MAX_SEED),
        steps=_integer(data, "steps", 1, MAX_STEPS),
        guidance_scale=_number(data, "guidance_scale", 0.0, MAX_GUIDANCE_SCALE),
        strength=_number(data, "strength", 0.01, 1.0),
        sampler=_sampler(data),
        loras=_loras(data),
    )


def _sampler(data: dict[str, Any]) -> str | None:
    if "sampler" not in data:
        return None
    if not isinstance(data["sampler"], str) or not data["sampler"].strip():
        raise errors.InvalidParameter(f'AdditionalParameters sampler must be a name such as "DPM++ 2M Karras"; '
                                      f"got {data['sampler']!r}.")  # fmt: skip
    return str(data["sampler"]).strip()


def _loras(data: dict[str, Any]) -> dict[str, float] | None:
    if "loras" not in data:
        return None
    value = data["loras"]
    if not isinstance(value, dict):
        raise errors.InvalidParameter(
            f'AdditionalParameters loras must be an object of adapter names and scales, e.g. {{"ink-style": 0.8}}; '
            f"got {value!r}."
        )
    return {
        str(name): _number(value, name, -MAX_LORA_SCALE, MAX_LORA_SCALE, f"loras {name!r}") or 0.0 for name in value
    }


def _size(value: Any) -> tuple[int, int]:
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise errors.InvalidParameter(
            f'AdditionalParameters size must be a string "WIDTHxHEIGHT"; got {str(value)[:40]!r}.',
            param="AdditionalParameters.size",
        )
    return int(match.group(1)), int(match.group(2))


def _integer(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidParameter(
            f"AdditionalParameters {key} must be an integer; got {str(value)[:40]!r}.",
            param=f"AdditionalParameters.{key}",
        )
    if not low <= value <= high:
        raise errors.InvalidParameterValue(
            f"AdditionalParameters {key} must be between {low} and {high}; got {value}.",
            param=f"AdditionalParameters.{key}",
        )
    return value


def _number(data: dict[str, Any], key: str, low: float, high: float, name: str = "") -> float | None:
    if key not in data:
        return None
    value, name = data[key], name or key
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise errors.InvalidParameter(
            f"AdditionalParameters {name} must be a number; got {str(value)[:40]!r}.",
            param=f"AdditionalParameters.{key}",
        )
    if not low <= value <= high:
        raise errors.InvalidParameterValue(
            f"AdditionalParameters {name} must be between {low:g} and {high:g}; got {value}.",
            param=f"AdditionalParameters.{key}",
        )
    return float(value)
