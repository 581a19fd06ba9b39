"""LoRA adapters (engines/adapters.py) and samplers (engines/samplers.py), per call: tiny adapters
made with peft change the pixels, scale 0 gives the model's own, switching never reloads the base
model, and neither an adapter nor a sampler carries over to the next task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aigc_image.catalog import ModelEntry, load_catalog
from aigc_image.engines import loading
from aigc_image.engines.base import GenerationRequest
from aigc_image.engines.diffusers_engine import DiffusersEngine
from aigc_image.errors import ModelUnavailable, NotSupported
from tests.lora import make_lora
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelEntry]:
    """A tiny SD 2 (UNet) and a tiny Z-Image (DiT), each offering two adapters, one of them bound."""
    root = tmp_path_factory.mktemp("lora")
    entries = {}
    for label, pipeline in (("SD-Turbo:1.0", "StableDiffusionPipeline"), ("Z-Image:turbo", "ZImagePipeline")):
        folder = save_tiny(pipeline, root / pipeline)
        ink, paper = (
            make_lora(folder, root / f"{pipeline}-loras", name, seed) for seed, name in enumerate(["ink", "paper"])
        )
        base = load_catalog().resolve(*label.split(":")).changed(source=str(folder), width=64, height=64, steps=3)
        entries[label] = base
        entries[f"{label}+lora"] = base.changed(version="ink", adapters={"ink": str(ink), "paper": str(paper)},
                                                loras={"ink": 0.8})  # fmt: skip
    return entries


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine("cpu", allow_download=False, max_loaded=8)


def image(engine: DiffusersEngine, entry: ModelEntry, **fields: Any) -> np.ndarray:
    values: dict[str, Any] = {"prompt": "a lighthouse", "negative_prompt": "", "count": 1, "width": 64, "height": 64,
                              "steps": 3, "guidance_scale": entry.guidance_scale, "seed": 1}  # fmt: skip
    [[made]] = engine.generate(entry, [GenerationRequest(**(values | fields))], lambda step, steps: None)
    return np.asarray(made.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("label", ["SD-Turbo:1.0", "Z-Image:turbo"])
def test_an_adapter_changes_the_pixels_and_scale_0_gives_the_models_own(
    engine: DiffusersEngine, models: dict[str, ModelEntry], label: str
) -> None:
    plain, bound = models[label], models[f"{label}+lora"]
    own = image(engine, plain)
    assert not np.array_equal(image(engine, bound), own)  # the bound adapter at 0.8
    assert np.array_equal(image(engine, bound, loras=(("ink", 0.0),)), own)  # off: exactly the model's pixels
    stronger = image(engine, bound, loras=(("ink", 1.5),))
    other = image(engine, bound, loras=(("ink", 0.0), ("paper", 0.8)))
    both = image(engine, bound, loras=(("paper", 0.8),))  # the bound one stays
    assert len({a.tobytes() for a in (own, stronger, other, both, image(engine, bound))}) == 5


def test_switching_adapters_never_reloads_the_base_model(
    engine: DiffusersEngine, models: dict[str, ModelEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = models["SD-Turbo:1.0+lora"]
    image(engine, bound)
    pipe = engine.pipeline(bound)
    loads: list[str] = []
    original = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: (loads.append("load"), original(*a, **k))[1])
    for scales in ((("ink", 0.3),), (("paper", 1.0),), ()):
        image(engine, bound, loras=scales)
    assert loads == [] and engine.pipeline(bound) is pipe


def test_nothing_carries_over_to_the_next_task(engine: DiffusersEngine, models: dict[str, ModelEntry]) -> None:
    plain = models["SD-Turbo:1.0"]
    bound = models["SD-Turbo:1.0+lora"]
    first = image(engine, bound)
    scheduler = engine.pipeline(bound).scheduler
    image(engine, bound, loras=(("paper", 2.0),), sampler="DPM++ 2M Karras")
    assert engine.pipeline(bound).scheduler is scheduler  # the model's own again
    assert np.array_equal(image(engine, bound), first)  # neither the adapter nor the sampler stayed
    assert np.array_equal(image(engine, plain), image(engine, bound, loras=(("ink", 0.0),)))


def test_a_failed_call_restores_the_sampler_and_turns_the_adapters_off(
    engine: DiffusersEngine, models: dict[str, ModelEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = models["SD-Turbo:1.0+lora"]
    before = image(engine, bound)
    pipe = engine.pipeline(bound)
    scheduler = pipe.scheduler

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the denoiser broke")

    monkeypatch.setattr(pipe.unet, "forward", broken)
    with pytest.raises(RuntimeError, match="broke"):
        image(engine, bound, sampler="Euler a", loras=(("paper", 1.0),))
    monkeypatch.undo()
    assert pipe.scheduler is scheduler
    assert np.array_equal(image(engine, bound), before)


def test_unknown_adapters_and_samplers_of_a_task_stored_earlier_fail_it_clearly(
    engine: DiffusersEngine, models: dict[str, ModelEntry]
) -> None:
    bound = models["SD-Turbo:1.0+lora"]
    with pytest.raises(NotSupported, match="no LoRA adapter watercolor"):
        image(engine, bound, loras=(("watercolor", 1.0),))
    with pytest.raises(NotSupported, match="Sampler 'LCM'"):
        image(engine, bound, sampler="LCM")


def test_an_adapter_that_cannot_load_makes_the_model_refuse_to_load(
    engine: DiffusersEngine, models: dict[str, ModelEntry], tmp_path: Path
) -> None:
    missing = models["SD-Turbo:1.0"].changed(version="broken", adapters={"gone": str(tmp_path / "gone.safetensors")})
    with pytest.raises(ModelUnavailable, match="cannot load LoRA adapter 'gone'"):
        engine.load(missing)
