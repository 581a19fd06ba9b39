"""Sizes and labels, in-process: the rules behind ExtraParameters and LogoAdd."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from aigc_image.catalog import load_catalog
from aigc_image.config import ConfigError
from aigc_image.media.labels import LABEL_TEXT_FRACTION, add_visible_label
from aigc_image.media.sizes import ASPECT_RATIOS, OUTPUT_SIZES, SHORTER_SIDE, native_size


@pytest.mark.parametrize(("ratio", "resolution"), list(OUTPUT_SIZES))
def test_each_table_size_has_the_resolutions_shorter_side_and_the_ratios_shape(ratio: str, resolution: str) -> None:
    width, height = OUTPUT_SIZES[(ratio, resolution)]
    across, down = ASPECT_RATIOS[ratio]
    assert min(width, height) == SHORTER_SIDE[resolution]
    assert width % 2 == 0 and height % 2 == 0
    assert abs(width / height - across / down) < 0.002
    assert (width >= height) == (across >= down)


@pytest.mark.parametrize("ratio", list(ASPECT_RATIOS))
@pytest.mark.parametrize(("pixels", "multiple"), [(64 * 64, 16), (1024 * 1024, 16), (2048 * 2048, 32), (512 * 512, 8)])
def test_native_sizes_keep_the_pixel_count_and_the_multiple(ratio: str, pixels: int, multiple: int) -> None:
    width, height = native_size(*ASPECT_RATIOS[ratio], pixels, multiple)
    assert width % multiple == 0 and height % multiple == 0
    assert 0.7 < width * height / pixels < 1.3


@pytest.mark.parametrize("size", [(64, 64), (1280, 720), (720, 1280), (5040, 2160), (2000, 40)])
def test_the_visible_label_is_tall_enough_and_stays_inside_the_corner(size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (30, 90, 150))
    marked = add_visible_label(image)
    assert marked.size == image.size
    difference = [
        (x, y)
        for y in range(0, size[1])
        for x in range(max(0, size[0] - 1300), size[0])
        if marked.getpixel((x, y)) != (30, 90, 150)
    ]
    xs, ys = [x for x, _ in difference], [y for _, y in difference]
    assert max(ys) - min(ys) + 1 >= LABEL_TEXT_FRACTION * min(size)
    assert min(xs) >= size[0] / 2 - 40 and min(ys) >= size[1] / 2 - 20


def test_a_registry_entry_with_an_unknown_aspect_ratio_is_refused_at_start_up(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[[models]]\nname = "m"\nversion = "1"\nengine = "tiny-random"\naspect_ratios = ["1:1", "5:4"]\n'
    )
    with pytest.raises(ConfigError, match="aspect_ratios: unknown '5:4'"):
        load_catalog(str(registry))


def test_a_transparent_image_becomes_a_jpeg_over_white_and_stays_transparent_as_png() -> None:
    import io

    from PIL import Image

    from aigc_image.media.encode import encode

    image = Image.new("RGBA", (8, 8), (10, 200, 30, 0))  # fully transparent, with a colour underneath
    image.putpixel((0, 0), (10, 200, 30, 255))
    jpeg = Image.open(io.BytesIO(encode(image, "jpeg")))
    assert jpeg.mode == "RGB" and min(jpeg.getpixel((7, 7))) > 245  # white, not the hidden green
    png = Image.open(io.BytesIO(encode(image, "png")))
    assert png.mode == "RGBA" and png.getpixel((7, 7))[3] == 0
