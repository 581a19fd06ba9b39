"""Draw the console's favicon (aigc_image/console/favicon.ico): the accent-blue rounded square of
the console with a white four-pointed spark, at 16, 32 and 48 pixels.

    .venv/bin/python scripts/make_favicon.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ACCENT = (11, 99, 206, 255)  # --accent in console/style.css
OUT = Path(__file__).resolve().parent.parent / "aigc_image" / "console" / "favicon.ico"


def icon(size: int) -> Image.Image:
    big = size * 8  # drawn large, then scaled down: smooth edges
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big // 5, fill=ACCENT)
    c, r, w = big / 2, big * 0.36, big * 0.09
    tips = [(c, c - r), (c + r, c), (c, c + r), (c - r, c)]  # the spark's points, between them its waist
    waist = [(c + w, c - w), (c + w, c + w), (c - w, c + w), (c - w, c - w)]
    points = [corner for pair in zip(tips, waist, strict=True) for corner in pair]
    draw.polygon(points, fill=(255, 255, 255, 255))
    return image.resize((size, size), Image.Resampling.LANCZOS)


if __name__ == "__main__":
    icon(64).save(OUT, sizes=[(16, 16), (32, 32), (48, 48)])
    print(f"wrote {OUT}")
