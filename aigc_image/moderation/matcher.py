"""Find listed terms in canonical text (normalize.py), on word boundaries.

* **Latin-script terms** match a run of consecutive words whose letters, joined, are the term's:
  "s e x", "se x" and "sex" all read "sex", and "child porn" also matches "childporn". A word is
  never split, so "grapes" does not contain "rape", and "thunder age sextant" does not contain
  "under age sex". Each start word is tried against a hash set, so the cost per prompt does not
  grow with the size of the lists.
* **Chinese terms** are found anywhere in the prompt's Chinese characters, separators removed
  (pyahocorasick's Aho-Corasick automaton, one pass for any number of terms), and a hit counts
  only when it lines up with the words a segmenter (jieba) finds there: it must begin where a
  word begins or end where a word ends. "恋童" hides in "眷恋童年" (眷恋 | 童年), across the middle
  of two words, so that is not a hit; in "恋童癖" it begins a word, so it is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import ahocorasick

from aigc_image.moderation.normalize import canonical, cjk_text, words


class TermMatcher:
    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        """``terms`` are (term, label) pairs; the label is reported when the term is found."""
        self._latin: dict[str, str] = {}
        self._cjk = ahocorasick.Automaton()
        self._longest = 0
        cjk_terms = []
        for term, label in terms:
            folded = canonical(term)
            if cjk := cjk_text(folded):
                self._cjk.add_word(cjk, (len(cjk), label))
                cjk_terms.append(cjk)
            elif joined := "".join(words(folded)):
                self._latin.setdefault(joined, label)
                self._longest = max(self._longest, len(joined))
        if cjk_terms:
            self._cjk.make_automaton()
            _teach_segmenter(cjk_terms)

    def labels(self, canonical_text: str, shortest: int = 1) -> Iterator[str]:
        """The labels of the terms ``canonical_text`` contains; Latin terms of at least ``shortest``
        letters."""
        sequence = words(canonical_text)
        for start in range(len(sequence)):
            joined = ""
            for word in sequence[start:]:
                joined += word
                if len(joined) > self._longest:
                    break
                if len(joined) >= shortest and joined in self._latin:
                    yield self._latin[joined]
        chinese = cjk_text(canonical_text)
        if not chinese or self._cjk.kind != ahocorasick.AHOCORASICK:
            return
        hits = list(self._cjk.iter(chinese))
        if not hits:
            return
        starts, ends = _word_boundaries(chinese)
        for end, (length, label) in hits:
            begin = end + 1 - length
            if begin in starts or end + 1 in ends:
                yield label


def _word_boundaries(text: str) -> tuple[set[int], set[int]]:
    starts, ends, position = set(), set(), 0
    for word in _jieba().lcut(text, HMM=False):
        starts.add(position)
        position += len(word)
        ends.add(position)
    return starts, ends


@functools.cache
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.Tokenizer()


def _teach_segmenter(terms: list[str]) -> None:
    """Listed terms are words to the segmenter, so it finds them where they stand alone."""
    segmenter = _jieba()
    for term in terms:
        segmenter.add_word(term)
