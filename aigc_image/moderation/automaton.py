"""Aho-Corasick: find every occurrence of many terms in one pass over the text.

Building is linear in the total length of the terms, searching linear in the text plus the
matches, so a list of tens of thousands of terms costs no more per prompt than a short one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator


class Automaton:
    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        """``terms`` are (pattern, label) pairs; the label is reported with each match."""
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[list[str]] = [[]]
        for pattern, label in terms:
            if pattern:
                self._add(pattern, label)
        self._link()

    def _add(self, pattern: str, label: str) -> None:
        node = 0
        for char in pattern:
            nxt = self._goto[node].get(char)
            if nxt is None:
                nxt = len(self._goto)
                self._goto[node][char] = nxt
                self._goto.append({})
                self._fail.append(0)
                self._out.append([])
            node = nxt
        self._out[node].append(label)

    def _link(self) -> None:
        queue = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            for char, child in self._goto[node].items():
                queue.append(child)
                fallback = self._fail[node]
                while fallback and char not in self._goto[fallback]:
                    fallback = self._fail[fallback]
                self._fail[child] = self._goto[fallback].get(char, 0)
                self._out[child] = self._out[child] + self._out[self._fail[child]]

    def labels(self, text: str) -> Iterator[str]:
        """The labels of every term found in ``text``, in order of where they end."""
        node = 0
        for char in text:
            while node and char not in self._goto[node]:
                node = self._fail[node]
            node = self._goto[node].get(char, 0)
            yield from self._out[node]
