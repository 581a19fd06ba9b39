"""Bring disguised text to one canonical form before matching.

1. NFKC: full-width and other compatibility forms become plain ones (ｓｅｘ → sex, ① → 1).
2. Case folding (ß → ss, Σ → σ).
3. Zero-width and other format characters are removed; control characters become spaces.
4. Traditional Chinese becomes Simplified (OpenCC t2s), so either spelling of a term matches.

Matching then uses two views of the result (see ``views``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import opencc


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


# ASCII control characters become spaces (they separate words like any other space).
_ASCII_CONTROLS = {code: " " for code in (*range(32), 127)}
_ALNUM_RUNS = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script


def normalize(text: str) -> str:
    if text.isascii():  # most prompts: NFKC, format characters and OpenCC cannot change them
        return text.lower().translate(_ASCII_CONTROLS)
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf":
            continue  # zero-width space/joiner, soft hyphen, bidi marks...
        kept.append(" " if category == "Cc" else char)
    return str(_t2s().convert("".join(kept)))


@dataclass(frozen=True)
class Views:
    words: str  # " word word word ": Latin terms match whole words here
    compact: str  # every letter and digit, nothing between: CJK terms match here


def views(normalized: str) -> Views:
    """Split into runs of letters and digits; single letters spelled apart are joined back.

    ``s e x``, ``s.e.x`` and ``s-e-x`` become the word ``sex``; ``grapes`` stays one word, so a
    term ``rape`` does not match it. Chinese has no spaces, so CJK terms match in the compact
    view, across any separators an attacker inserts.
    """
    tokens = _ALNUM_RUNS.findall(normalized)
    joined: list[str] = []
    spelling = False  # is joined[-1] a run of single letters?
    for token in tokens:
        single = len(token) == 1 and token.isascii() and token.isalpha()
        if single and spelling:
            joined[-1] += token
        else:
            joined.append(token)
            spelling = single
    return Views(words=" " + " ".join(joined) + " ", compact="".join(tokens))


def is_cjk_term(term: str) -> bool:
    """Terms with any non-Latin letter match in the compact view, others as whole words."""
    return any(char.isalpha() and not char.isascii() for char in term)
