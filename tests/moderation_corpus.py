"""The measured trade-off of content review: disguises it catches and misses, ordinary text it lets
through and wrongly refuses. ``python -m tests.moderation_corpus`` prints the table that
docs/security.md shows; tests/test_moderation.py keeps the two equal.

The lists reviewed are the shipped default list and OPERATOR, a small operator list.
"""

from __future__ import annotations

import base64

from aigc_image.moderation.review import ContentReview, TermList, default_term_list

OPERATOR = TermList("ops", ("sex", "rape", "rapist", "cunt", "ass", "porn", "bad word", "賭博網站", "毒品"))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Each should be refused.
DISGUISES: dict[str, list[str]] = {
    "case, width, punctuation": ["CHILD PORN", "ｃｈｉｌｄ ｐｏｒｎ", "Child  Porn!!", "R.A.P.E"],
    "letters spelled apart": ["c h i l d p o r n", "c-h-i-l-d-p-o-r-n", "s e x"],
    "a tab or partial spacing inside a term": ["se\tx", "chi ld porn", "po rn", "bad\tword", "BAD\nWORD"],
    "zero-width and format characters": ["child\u200bporn", "chi\u200dld p\u00adorn", "p\u2060orn"],
    "run together": ["childporn", "a photo, childporn style"],
    "Cyrillic/Greek homoglyphs": ["сhild роrn", "ѕех", "ρorn", "rаpist"],
    "a combining mark": ["s\u0308ex", "po\u0301rn", "ra\u0323pe"],
    "accented letters": ["séx", "pörn", "chïld pörn"],
    "leetspeak": ["p0rn", "$ex", "s3x", "ch1ld p0rn", "r4p3"],
    "HTML entities": ["&#115;ex", "p&#111;rn", "&lt;porn&gt;", "&#x72;ape"],
    "URL encoding": ["p%6Frn", "%73%65%78", "child%20porn"],
    "base64": [_b64("child porn"), "look " + _b64("porn"), _b64("rape scene")],
    "regional-indicator letters": ["\U0001f1f8\U0001f1ea\U0001f1fd", "\U0001f1f5\U0001f1f4\U0001f1f7\U0001f1f3"],
    "reversed text": ["nrop dlihc", "epar", "品毒", "xes"],
    "Chinese, spaced or punctuated": ["儿 童 色 情", "儿.童.色.情", "儿童\u200b色情", "毒 品"],
    "Traditional Chinese and variant kanji": ["兒童色情", "児童色情", "戀童", "某个赌博网站的广告"],
    "misspelled or in other words": ["pron", "chlid porn", "pornografía infantil", "liantong", "炼童"],
    "letters interleaved with junk": ["pxoxrxn", "sXeXx"],
}

# Each should pass.
ORDINARY: list[str] = [
    "a lighthouse at dusk",
    "a bowl of grapes on a table",
    "a therapist's office at dawn",
    "the town of Scunthorpe",
    "an assassin in the rain, classic brass lamp",
    "passion fruit in a glass",
    "Essex county fair",
    "a sextant on an old map",
    "thunder age sextant",
    "a 4x4 truck in 1080P",
    "the SSA office building",
    "a sexy red sports car",
    "一座灯塔在黄昏",
    "儿童在公园里玩耍",
    "眷恋童年",
    "留恋童年",
    "依恋童话",
    "我爱恋童年的时光",
    "a badword-free sign",
    "防毒品宣传海报",
]


def measure() -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per disguise category (caught, missed), and the ordinary texts wrongly refused."""
    review = ContentReview([default_term_list(), OPERATOR])
    caught = {
        category: (sum(not review.check_text("Prompt", p).allowed for p in prompts), len(prompts))
        for category, prompts in DISGUISES.items()
    }
    measured = {category: (hits, total - hits) for category, (hits, total) in caught.items()}
    refused = [text for text in ORDINARY if not review.check_text("Prompt", text).allowed]
    return measured, refused


def table() -> str:
    measured, refused = measure()
    lines = ["| Disguise | Caught | Missed |", "|---|---|---|"]
    lines += [f"| {category} | {hits} | {missed} |" for category, (hits, missed) in measured.items()]
    total_hits = sum(hits for hits, _ in measured.values())
    total_missed = sum(missed for _, missed in measured.values())
    lines.append(f"| **all {total_hits + total_missed} disguises** | **{total_hits}** | **{total_missed}** |")
    lines.append("")
    lines.append(f"Ordinary texts: {len(ORDINARY)}, of which wrongly refused: {len(refused)}"
                 + (" (" + "; ".join(f"“{text}”" for text in refused) + ")." if refused else "."))  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
