"""The diffusers engine on real (tiny, random-weight) pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_image.catalog import ModelEntry
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.engines.tiny_random import build_pipeline
from aigc_image.errors import ModelUnavailable

TINY = ModelEntry(name="tiny-random", version="1", engine="tiny-random", width=64, height=64, steps=2)


def request(count: int = 1, width: int = 64, negative: str = "") -> GenerationRequest:
    return GenerationRequest("a lighthouse", negative, count, width, width, 2, 6.0)


def test_tiny_random_generates_the_requested_images_and_reports_steps() -> None:
    steps: list[tuple[int, int]] = []
    [images] = DiffusersEngine("cpu").generate(
        TINY, [request(count=2, negative="fog")], lambda s, n: steps.append((s, n))
    )
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert steps == [(1, 2), (2, 2)]


def test_tiny_random_is_deterministic_across_builds() -> None:
    first, second = build_pipeline(), build_pipeline()
    for a, b in zip(first.unet.parameters(), second.unet.parameters(), strict=True):
        assert (a == b).all()


def test_from_pretrained_loads_a_saved_diffusers_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    build_pipeline().save_pretrained(folder)
    entry = ModelEntry(
        name="Mine", version="1", engine="diffusers", source=str(folder), pipeline="StableDiffusionPipeline"
    )
    engine = DiffusersEngine("cpu", allow_download=False)
    [images] = engine.generate(entry, [request(width=128)], lambda s, n: None)
    assert images[0].size == (128, 128)
    assert engine.pipeline(entry) is engine.pipeline(entry)  # kept loaded


def test_least_recently_used_pipeline_is_unloaded(tmp_path: Path) -> None:
    engine = DiffusersEngine("cpu", max_loaded=1)
    first = engine.pipeline(TINY)
    other = ModelEntry(name="tiny-random", version="2", engine="tiny-random")
    engine.pipeline(other)
    assert engine.pipeline(TINY) is not first


def test_missing_hub_weights_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = ModelEntry(name="Hunyuan", version="3.0", engine="diffusers", source="no-such-org/no-such-model")
    for allow_download in (True, False):
        with pytest.raises(ModelUnavailable) as caught:
            DiffusersEngine("cpu", allow_download=allow_download).generate(entry, [request()], lambda s, n: None)
        message = str(caught.value)
        assert "no-such-org/no-such-model" in message
        assert "hf download no-such-org/no-such-model" in message
        assert "local diffusers folder" in message
        assert "stacktrace" not in message  # the client sees no stack trace: the cause is named instead


def test_missing_local_folder_and_unknown_pipeline_class_are_explained(tmp_path: Path) -> None:
    missing = ModelEntry(name="M", version="1", engine="diffusers", source=str(tmp_path / "absent"))
    with pytest.raises(ModelUnavailable, match="does not exist"):
        DiffusersEngine("cpu").pipeline(missing)
    wrong_class = ModelEntry(name="M", version="1", engine="diffusers", source=str(tmp_path), pipeline="NoSuchPipe")
    with pytest.raises(ModelUnavailable, match="NoSuchPipe"):
        DiffusersEngine("cpu").pipeline(wrong_class)
    empty = ModelEntry(
        name="M", version="1", engine="diffusers", source=str(tmp_path), pipeline="StableDiffusionPipeline"
    )
    with pytest.raises(ModelUnavailable, match="complete diffusers model"):
        DiffusersEngine("cpu").pipeline(empty)
