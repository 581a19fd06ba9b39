"""LoRA adapters: loaded once with the model, chosen per call.

``load_adapters`` loads every adapter an entry offers (``adapters``) into its pipeline at load,
each under its own name, with diffusers' ``load_lora_weights`` (peft). A call then sets the
scales it wants with ``set_adapters`` (``adapters_set``): the entry's ``loras``, changed by the
request's; an adapter at scale 0 is left out, and with none left the adapters are turned off, so
scale 0 gives exactly the model's own pixels. Switching adapters never reloads the base model, and
after the call the adapters are turned off again, so nothing carries over to the next task.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aigc_image.catalog import ModelEntry
from aigc_image.errors import ModelUnavailable, NotSupported


def load_adapters(pipe: Any, entry: ModelEntry, allow_download: bool) -> None:
    """Load the adapters ``entry`` offers into ``pipe``, turned off until a call sets them."""
    if not entry.adapters:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelUnavailable(f"Model {entry.label}: {type(pipe).__name__} cannot load LoRA adapters.")
    for name, adapter in entry.adapters.items():
        options: dict[str, Any] = {"adapter_name": name, "local_files_only": not allow_download}
        if adapter.weight_name:
            options["weight_name"] = adapter.weight_name
        try:
            with warnings.catch_warnings():  # each adapter after the first: peft warns of "multiple adapters", as meant
                warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
                pipe.load_lora_weights(adapter.source, **options)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(
                f"Model {entry.label}: cannot load LoRA adapter {name!r} from {adapter.source}: {reason}"
            ) from exc
    pipe.disable_lora()


def scales(entry: ModelEntry, requested: Mapping[str, float]) -> dict[str, float]:
    """The adapters a call runs with: the entry's bound ones, changed by the request's; none at 0."""
    unknown = sorted(set(requested) - set(entry.adapters))
    if unknown:  # the API refuses these; a stored task from before a registry change lands here
        raise NotSupported(f"Model {entry.label} offers no LoRA adapter {', '.join(unknown)}.")
    return {name: scale for name, scale in {**entry.loras, **requested}.items() if scale != 0}


@contextmanager
def adapters_set(pipe: Any, entry: ModelEntry, active: Mapping[str, float]) -> Iterator[None]:
    """``pipe`` with the adapters ``active`` at their scales for one call, then all off again."""
    if not entry.adapters:
        yield
        return
    if active:
        pipe.enable_lora()
        pipe.set_adapters(list(active), list(active.values()))
    try:
        yield
    finally:
        pipe.disable_lora()
