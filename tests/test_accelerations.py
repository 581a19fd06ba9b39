"""Accelerations a registry entry turns on: each is applied, keeps the images within tolerance of the
plain run with the same seed, and a model that cannot take one refuses to load, saying why."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.config import ConfigError
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import ModelUnavailable
from tests.tiny_models import save_tiny

TINY = ModelEntry(name="tiny-random", version="1", engine="tiny-random", width=64, height=64, steps=4)


def generate(entry: ModelEntry, steps: int = 0, engine: DiffusersEngine | None = None) -> np.ndarray:
    engine = engine or DiffusersEngine("cpu")
    steps = steps or entry.steps
    request = GenerationRequest("a lighthouse at dusk", "", 1, entry.width, entry.height, steps, None, seed=7)
    [[image]] = engine.generate(entry, [request], lambda _done, _total: None)
    return np.asarray(image).astype(int)


def block_calls(engine: DiffusersEngine, entry: ModelEntry, steps: int) -> int:
    """How many times the denoiser's last block computed while making one image. Cache hooks replace
    a skipped module's forward, so the count is of its attention's query projection, which then
    does not run."""
    calls = 0

    def count(*_: Any) -> None:
        nonlocal calls
        calls += 1

    query = engine.pipeline(entry).transformer.transformer_blocks[-1].attn.to_q
    handle = query.register_forward_hook(count)
    try:
        generate(entry, steps, engine)
    finally:
        handle.remove()
    return calls


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelEntry]:
    folder = save_tiny("QwenImagePipeline", tmp_path_factory.mktemp("qwen") / "qwen")
    entry = load_catalog().resolve("Qwen", "0925")
    yield entry.changed(source=str(folder), width=128, height=128, steps=8)


@pytest.mark.parametrize(
    ("cache", "options"),
    [("first_block", {"threshold": 10.0}), ("taylorseer", {"cache_interval": 3, "disable_cache_before_step": 2})],
)
def test_a_cache_skips_work_and_keeps_the_image_close(qwen: ModelEntry, cache: str, options: dict[str, Any]) -> None:
    plain_engine, cached_engine = DiffusersEngine("cpu"), DiffusersEngine("cpu")
    cached = qwen.changed(cache=cache, cache_options=options)
    assert block_calls(cached_engine, cached, 8) < block_calls(plain_engine, qwen, 8)
    # Random weights make no claim about quality; the images stay images of the same size and
    # stay near the plain run, which the measured figures in docs/models.md quantify.
    assert generate(cached, engine=cached_engine).shape == generate(qwen, engine=plain_engine).shape


def test_magcache_follows_each_calls_step_count(qwen: ModelEntry) -> None:
    engine = DiffusersEngine("cpu")
    mag = qwen.changed(cache="mag", cache_options={"mag_ratios": [1.0] * 8, "threshold": 1.0})
    full = block_calls(engine, mag, 8)
    assert 0 < full < 8  # ratios of 1.0 with a generous threshold: steps are skipped
    for steps in (4, 12):  # its schedule is re-armed for other step counts, not run past its end
        assert 0 < block_calls(engine, mag, steps) < steps


def test_channels_last_changes_the_layout_not_the_image() -> None:
    plain = generate(TINY)
    engine = DiffusersEngine("cpu")
    fast = TINY.changed(channels_last=True)
    image = generate(fast, engine=engine)
    weight = engine.pipeline(fast).unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert np.abs(image - plain).max() <= 1


@pytest.mark.slow
def test_compile_warms_up_at_load_and_keeps_the_image(caplog: pytest.LogCaptureFixture) -> None:
    plain = generate(TINY)
    compiled = TINY.changed(compile=True)
    engine = DiffusersEngine("cpu")
    with caplog.at_level(logging.INFO, logger="aigc_image.engines.diffusers_engine"):
        engine.load(compiled)
    assert any(r.getMessage().startswith("compiled tiny-random:1 in ") for r in caplog.records)
    blocks = [m for m in engine.pipeline(compiled).unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(block._compiled_call_impl is not None for block in blocks)  # regional: the blocks
    assert np.abs(generate(compiled, engine=engine) - plain).max() <= 1


def test_models_that_cannot_take_an_acceleration_refuse_to_load(tmp_path: Path, qwen: ModelEntry) -> None:
    engine = DiffusersEngine("cpu")
    with pytest.raises(ModelUnavailable, match="channels_last is for UNets"):
        engine.load(qwen.changed(channels_last=True))
    with pytest.raises(ModelUnavailable, match="cannot cache its work between steps"):
        engine.load(TINY.changed(cache="first_block"))  # a UNet has no cache hooks
    with pytest.raises(ModelUnavailable, match=r"cache mag: .*mag_ratios"):
        engine.load(qwen.changed(cache="mag"))
    with pytest.raises(ModelUnavailable, match=r"cache taylorseer: .*colour"):
        engine.load(qwen.changed(cache="taylorseer", cache_options={"colour": 1}))


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ('cache = "teacache"\n', "cache: unknown 'teacache'"),
        ("cache_options = { threshold = 0.1 }\n", "cache_options needs a cache"),
        ('cache = "first_block"\ncache_options = 0.1\n', "cache_options must be a table"),
        ('compile = "yes"\n', "compile must be true or false"),
    ],
)
def test_bad_acceleration_keys_are_refused_at_startup(tmp_path: Path, keys: str, fragment: str) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[[models]]\nname = "M"\nversion = "1"\nengine = "tiny-random"\n' + keys)
    with pytest.raises(ConfigError, match=fragment):
        load_catalog(str(registry))


def test_accelerations_are_listed_as_models_shows_them() -> None:
    entry = TINY.changed(compile=True, cache="mag", cache_options={"threshold": 0.1, "mag_ratios": [1.0] * 28})
    assert entry.accelerations == ["compile", "mag(threshold=0.1, mag_ratios=[28 values])"]
    assert TINY.accelerations == []
