"""Content review: disguises are caught, innocent text is not over-blocked, failures refuse."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest

from aigc_image.config import ConfigError
from aigc_image.moderation.matcher import TermMatcher
from aigc_image.moderation.normalize import canonical, readings, words
from aigc_image.moderation.review import (
    ContentReview,
    ReviewUnavailable,
    TermList,
    build_review,
    default_term_list,
    read_term_file,
)
from tests.helpers import ROOT

OPERATOR = TermList("ops", ("rape", "rapist", "cunt", "ass", "bad word", "賭博網站", "毒品"))


@pytest.fixture(scope="module")
def review() -> ContentReview:
    return ContentReview([default_term_list(), OPERATOR])


@pytest.mark.parametrize(
    "prompt",
    [
        "child porn",
        "CHILD PORN",
        "ｃｈｉｌｄ ｐｏｒｎ",  # full width
        "Child  Porn!!",
        "c h i l d p o r n",  # spelled out
        "c.h.i.l.d p.o.r.n",
        "c-h-i-l-d-p-o-r-n",
        "childporn",  # run together
        "child\u200bporn",  # glued by a zero-width space
        "chi\u200dld p\u00adorn",  # zero-width joiner and soft hyphen inside the words
        "a photo, childporn style",
        "儿童色情",
        "兒童色情",  # Traditional
        "儿 童 色 情",
        "儿.童.色.情",
        "儿童\u200b色情",
        "某个赌博网站的广告",  # the operator's Traditional term, written in Simplified
        "毒 品",
        "he is a rapist",
        "R.A.P.E",
        "bad\tword",
        "BAD\nWORD",
    ],
)
def test_disguised_terms_are_caught(review: ContentReview, prompt: str) -> None:
    assert not review.check_text("Prompt", prompt).allowed


@pytest.mark.parametrize(
    "prompt",
    [
        "a bowl of grapes on a table",  # contains "rape"
        "a therapist's office at dawn",  # contains "rapist"
        "the town of Scunthorpe",  # contains "cunt"
        "an assassin in the rain, classic brass lamp",  # contains "ass"
        "a badword-free sign",  # single-word run-together of a multi-word term... see below
        "a lighthouse at dusk",
        "一座灯塔在黄昏",
        "儿童在公园里玩耍",  # children playing in a park
    ],
)
def test_innocent_text_is_not_over_blocked(review: ContentReview, prompt: str) -> None:
    verdict = review.check_text("Prompt", prompt)
    if prompt.startswith("a badword"):
        # The documented trade-off: multi-word Latin terms also match run together.
        assert not verdict.allowed
    else:
        assert verdict.allowed, prompt


def test_the_verdict_names_the_list_not_the_words(review: ContentReview) -> None:
    assert review.check_text("Prompt", "some 毒品").source == "list:ops"
    assert review.check_text("Prompt", "child porn").source == "list:default"


def test_normalisation_steps() -> None:
    assert canonical("ＡＢＣ\u200b\u00adx\tY") == "abcx y"
    assert canonical("臺灣") == "台湾" and canonical("児童") == "儿童"  # Traditional, and a variant kanji
    assert canonical("ѕех") == "sex" and canonical("séx") == "sex" and canonical("s\u0308ex") == "sex"
    assert canonical("\U0001f1f8\U0001f1ea\U0001f1fd") == "sex"  # regional-indicator letters
    assert words(canonical("a s s hole, 儿童")) == ["a", "s", "s", "hole"]
    decoded = {reading.text for reading in readings("&#112;0rn %41 cG9ybg==")}
    assert {"p0rn %41 cG9ybg==", "&#112;0rn A cG9ybg==", "porn", "&#112;orn %41 cG9ybg=="} <= decoded


def test_the_matcher_finds_a_term_exactly_when_consecutive_words_spell_it() -> None:
    """Against a naive search: a term matches when some run of consecutive words, joined, is it."""
    rng = random.Random(7)
    alphabet = "abc"
    for _ in range(300):
        terms = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 8))}
        text = " ".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(0, 8))
        )
        found = set(TermMatcher((term, term) for term in terms).labels(text))
        tokens = text.split()
        runs = {"".join(tokens[i:j]) for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1)}
        assert found == terms & runs, (terms, text)


def test_the_security_docs_show_the_measured_trade_off() -> None:
    from tests.moderation_corpus import table

    assert table() in (ROOT / "docs" / "security.md").read_text()


def test_a_large_list_builds_and_matches() -> None:
    rng = random.Random(1)
    terms = tuple("".join(rng.choice("abcdefghij") for _ in range(8)) for _ in range(50_000))
    review = ContentReview([TermList("big", (*terms, "needle phrase"))])
    assert review.term_count == 50_001
    assert not review.check_text("Prompt", "a needle phrase here").allowed
    assert review.check_text("Prompt", "x" * 1000).allowed


def test_a_failing_classifier_fails_closed(review: ContentReview) -> None:
    def broken(kind: str, content: Any) -> str | None:
        raise TimeoutError("classifier timed out")

    with pytest.raises(ReviewUnavailable):
        ContentReview([OPERATOR], broken).check_text("Prompt", "a lighthouse")


def test_the_classifier_sees_each_field_after_the_lists() -> None:
    seen: list[tuple[str, Any]] = []

    def classifier(kind: str, content: Any) -> str | None:
        seen.append((kind, content))
        return "looks violent" if "sword" in str(content) else None

    review = ContentReview([OPERATOR], classifier)
    assert review.check_text("Prompt", "a lighthouse").allowed
    assert review.check_text("NegativePrompt", "a sword").source == "classifier:looks violent"
    assert not review.check_text("Prompt", "毒品").allowed
    assert seen == [("Prompt", "a lighthouse"), ("NegativePrompt", "a sword")]  # lists refused first


def test_term_files_and_hooks_must_load(tmp_path: Path) -> None:
    terms = tmp_path / "brand-safety.txt"
    terms.write_text("# comment\n\nCompetitorCorp\n賭場\n", encoding="utf-8")
    assert read_term_file(terms) == TermList("brand-safety", ("CompetitorCorp", "賭場"))
    review = build_review([str(terms)], use_default_list=False, classifier="")
    assert not review.check_text("Prompt", "a competitorcorp logo").allowed
    with pytest.raises(ConfigError):
        build_review([str(tmp_path / "missing.txt")], True, "")
    with pytest.raises(ConfigError):
        build_review([], True, "no.such.module:check")


def test_refusals_are_audited_without_the_prompt(caplog: pytest.LogCaptureFixture) -> None:
    from aigc_image.catalog import load_catalog
    from aigc_image.clock import ManualClock
    from aigc_image.protocol.actions import Actions, Limits
    from aigc_image.protocol.errors import ViolationContent
    from aigc_image.protocol.validation import CreateLimits, task_spec

    actions = Actions(None, load_catalog(), None, ManualClock(), Limits(1000, 60), ContentReview([OPERATOR]))  # type: ignore[arg-type]
    spec, _ = task_spec(
        {"Prompt": "selling 毒品 cheap", "ModelName": "tiny-random"}, load_catalog(), CreateLimits(1000)
    )
    with caplog.at_level(logging.WARNING, logger="aigc_image.audit"), pytest.raises(ViolationContent):
        actions.review_prompts(spec, "AKIDkey", "req-1")
    [record] = caplog.records
    assert "key=AKIDkey" in record.getMessage() and "request=req-1" in record.getMessage()
    assert "by=list:ops" in record.getMessage() and "毒品" not in record.getMessage()
    actions.log_prompts = True
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aigc_image.audit"), pytest.raises(ViolationContent):
        actions.review_prompts(spec, "AKIDkey", "req-2")
    assert "毒品" in caplog.records[0].getMessage()
