"""Render the visible AI label's text once into aigc_image/media/ai_label.png.

The service must draw "AI生成 / AI-generated" on any host, and few hosts have a CJK font, so
the text ships as a small grayscale bitmap (its alpha: white text on black) scaled to each image. Rendered
from WenQuanYi Micro Hei (Apache-2.0 or GPL-3.0; Debian package fonts-wqy-microhei):

    apt-get install fonts-wqy-microhei && .venv/bin/python scripts/make_label_bitmap.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TEXT = "AI生成 / AI-generated"
FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
HEIGHT = 128  # pixels of text height in the bitmap; larger labels are scaled up from it

font = ImageFont.truetype(FONT, HEIGHT)
left, top, right, bottom = font.getbbox(TEXT)
canvas = Image.new("L", (right - left, bottom - top), 0)
ImageDraw.Draw(canvas).text((-left, -top), TEXT, fill=255, font=font)
out = Path(__file__).resolve().parent.parent / "aigc_image" / "media" / "ai_label.png"
canvas.save(out, optimize=True)  # grayscale: anti-aliased edges scale well
print(out, canvas.size, out.stat().st_size, "bytes")
