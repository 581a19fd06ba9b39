"""What the bounded JSON loader costs over plain ``json.loads``, in one process, on the bodies the
faces see: a typical create, one at the MPS body cap (10 MB, mostly one long string), and a wide
object of many small fields. Prints each as a ratio to ``json.loads`` on the same bytes.

    .venv/bin/python bench/parse_limits.py

Seen on the shared 2-core machine (busy, so noisy): a typical create ×1.8–2.1 (about 55 µs against
26 µs); 10 MB of one string ×2.6–3.6 and 1 MB of 60,000 small values ×2.8–3.2, the cheap scans of
the raw bytes (digit runs, brackets, escapes) and, where they cannot rule it out, the walk.
"""

from __future__ import annotations

import json
import timeit

from aigc_image.bounded import ParseLimits, load_json

BODIES = {
    "typical create": json.dumps(
        {
            "Prompt": "a lighthouse at dusk, oil painting",
            "ModelName": "Qwen",
            "ExtraParameters": {"AspectRatio": "16:9", "Resolution": "1080P"},
            "AdditionalParameters": '{"seed": 7, "steps": 30}',
        }
    ).encode(),
    "10 MB, one long string": json.dumps({"Prompt": "x" * (10 * 1024 * 1024 - 20)}).encode(),
    "1 MB of small fields": json.dumps({f"k{i}": [i, "v", {"n": i}] for i in range(20_000)}).encode(),
}
LIMITS = ParseLimits(max_string_chars=11 * 1024 * 1024)


def main() -> None:
    for name, body in BODIES.items():
        number = max(1, 2_000_000 // len(body))
        plain = min(timeit.repeat(lambda body=body: json.loads(body), number=number, repeat=5)) / number
        bounded = min(timeit.repeat(lambda body=body: load_json(body, LIMITS), number=number, repeat=5)) / number
        print(
            f"{name:24} json.loads {plain * 1e6:10.1f} µs   bounded {bounded * 1e6:10.1f} µs   ×{bounded / plain:.2f}"
        )


if __name__ == "__main__":
    main()
