"""Content review cost per prompt with a small list and a large one: the ratio should stay near 1.

12 terms (the default list) against 20,000 (random Latin and Chinese terms added), for an English
and a Chinese prompt; best of 5 rounds of 2,000 reviews each, in this process.

    .venv/bin/python -m bench.moderation
"""

from __future__ import annotations

import random
import time

from aigc_image.moderation.review import ContentReview, TermList, default_term_list

PROMPTS = {
    "English": "a lighthouse at dusk, waves on the rocks, cinematic lighting, highly detailed, 8k",
    "Chinese": "一座灯塔在黄昏，海浪拍打着岩石，电影感的光线，细节丰富",
}


def per_review(review: ContentReview, prompt: str, rounds: int = 5, count: int = 2000) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            review.check_text("Prompt", prompt)
        best = min(best, (time.perf_counter() - started) / count)
    return best


def main() -> None:
    rng = random.Random(0)
    latin = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 12))) for _ in range(10_000)
    ]
    chinese = ["".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4))) for _ in range(10_000)]
    small = ContentReview([default_term_list()])
    large = ContentReview([default_term_list(), TermList("big", tuple(latin + chinese))])
    print(f"terms: small {small.term_count}, large {large.term_count}")
    for language, prompt in PROMPTS.items():
        few, many = per_review(small, prompt), per_review(large, prompt)
        print(f"{language} prompt: {few * 1e6:6.1f} µs with the small list, {many * 1e6:6.1f} µs with the large one"
              f" (ratio {many / few:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
