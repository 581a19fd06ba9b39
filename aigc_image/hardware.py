"""What this host can run models on: its GPUs and their memory, or its CPU and RAM, and which
device each worker process gets.

Read once at start by ``serve`` (to choose a default model when none is configured, and to start
one worker per device) and by ``aigc-image models`` (to say what fits). Uses PyTorch's view of the
GPUs, so it sees exactly what a worker on this host will see (``CUDA_VISIBLE_DEVICES`` included).

The hardware-aware choice lives here too: ``fits`` (a model runs without offloading) and
``default_for`` (the best catalogue entry that fits), counting each entry's memory in its own dtype
and quantization, and never choosing a quantization the device cannot run (``quantization_problem``,
which the engine also asks before it loads one).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.config import ConfigError

GIB = 1024**3
# Share of a GPU's (or the RAM's) memory a model may plan to use: the rest is for the CUDA
# context, the other process on a CPU host, and fragmentation.
USABLE_MEMORY = 0.9
FLOAT8_CAPABILITY = (8, 9)  # float8 matrix units: Ada (8.9), Hopper (9.0) and later
# The package each quantization is computed with (installed by the `quant` extra).
QUANTIZATION_PACKAGES = {"int8": "torchao", "float8": "torchao", "nf4": "bitsandbytes", "gguf": "gguf"}


@dataclass(frozen=True)
class Hardware:
    kind: str  # "cuda" or "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3", or "CPU"
    memory_bytes: int  # memory of the largest GPU, or the host's RAM
    devices: int  # visible GPUs (0 on a CPU host)
    capability: tuple[int, int] | None = None  # the GPU's CUDA compute capability (None on a CPU)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def describe(self) -> str:
        if self.kind == "cuda":
            count = f"{self.devices}× " if self.devices > 1 else ""
            return f"{count}{self.name}, {self.memory_gib:.0f} GiB"
        return f"no GPU; {self.memory_gib:.0f} GiB RAM"


def quantization_problem(quantization: str, kind: str, capability: tuple[int, int] | None) -> str | None:
    """Why a device of ``kind`` (and CUDA ``capability``) cannot run ``quantization``, or None."""
    if quantization == "none":
        return None
    package = QUANTIZATION_PACKAGES[quantization]
    if importlib.util.find_spec(package) is None:
        return f"{quantization} needs the {package} package: pip install 'aigc-image[quant]'"
    if quantization == "nf4" and kind != "cuda":
        return "nf4 needs a CUDA GPU: diffusers quantizes bitsandbytes weights on one; on a CPU use int8 or gguf"
    if quantization == "float8" and (kind != "cuda" or capability is None or capability < FLOAT8_CAPABILITY):
        where = "a CPU" if kind != "cuda" else f"a GPU of compute capability {'.'.join(map(str, capability or ()))}"
        return f"float8 needs an NVIDIA GPU of compute capability 8.9 or later (Ada, Hopper, Blackwell), not {where}"
    return None


def needed_gb(entry: ModelEntry, hardware: Hardware) -> float:
    """Memory ``entry`` needs on ``hardware`` (0: not offered there), in its dtype and quantization."""
    return entry.memory_gb if hardware.kind == "cuda" else entry.cpu_memory_gb


def fits(entry: ModelEntry, hardware: Hardware) -> bool:
    """Whether ``entry`` runs on ``hardware`` without offloading weights to the CPU."""
    needed = needed_gb(entry, hardware)
    runs = quantization_problem(entry.quantization, hardware.kind, hardware.capability) is None
    return runs and needed > 0 and needed * GIB <= USABLE_MEMORY * hardware.memory_bytes


def default_for(catalog: Catalog, hardware: Hardware) -> tuple[ModelEntry, str]:
    """The best model for ``hardware`` and why: the first entry (in catalogue order, best first)
    that fits its memory; with none that fits, the smallest one it can run. Never the noise-making
    test model."""
    candidates = [entry for entry in catalog.entries.values() if entry.engine != "tiny-random"]
    for entry in candidates:
        if fits(entry, hardware):
            return entry, f"the best built-in model that fits this host ({hardware.describe()})"
    runnable = [e for e in candidates if not quantization_problem(e.quantization, hardware.kind, hardware.capability)]
    sized = [e for e in runnable if needed_gb(e, hardware) > 0]
    smallest = min(sized or runnable or candidates, key=lambda e: needed_gb(e, hardware))
    return smallest, f"no model fits this host ({hardware.describe()}); the smallest one"


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def probe(devices: Sequence[str] = ("auto",)) -> Hardware:
    """The hardware workers on ``devices`` (setting ``worker.devices``) would use. With several
    GPUs, the smallest: every worker must be able to run what is chosen for them."""
    import torch  # imported here: the API process only needs it for this one look

    indices = sorted({int(d.removeprefix("cuda:")) for d in worker_devices(devices) if d.startswith("cuda:")})
    if not indices:
        return Hardware("cpu", "CPU", ram_bytes(), 0)
    smallest = min(indices, key=lambda i: torch.cuda.get_device_properties(i).total_memory)
    properties = torch.cuda.get_device_properties(smallest)
    capability = (properties.major, properties.minor)
    return Hardware("cuda", properties.name, properties.total_memory, len(indices), capability)


def worker_devices(devices: Sequence[str]) -> list[str]:
    """One device per worker process: ``auto`` is every GPU PyTorch sees, else the CPU."""
    import torch

    count = torch.cuda.device_count()  # asks NVML: no CUDA context in this process
    if tuple(devices) == ("auto",):
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    resolved = ["cuda:0" if device == "cuda" else device for device in devices]
    for device in resolved:
        if device.startswith("cuda:") and int(device.removeprefix("cuda:")) >= count:
            seen = f"{count} GPU{'s' if count != 1 else ''}" if count else "no GPU"
            raise ConfigError(f"worker.devices names {device}, but PyTorch sees {seen} on this host.")
    return resolved


def require_gpu(device: str) -> None:
    """After ``pin``: a worker sent to a GPU this process cannot see stops now, not at its first task."""
    import torch

    if torch.cuda.device_count() > 0:
        return
    if torch.version.cuda is None:
        raise ConfigError(f"the worker's device is {device}, but this PyTorch is a CPU build "
                          "(docs/models.md says how to install one for your GPUs).")  # fmt: skip
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise ConfigError(f"the worker's device is {device}, but PyTorch sees no GPU"
                      + (f" (CUDA_VISIBLE_DEVICES={shown})." if shown is not None else "."))  # fmt: skip


def pin(device: str) -> str:
    """Make GPU ``cuda:N`` the only one this process sees, so that nothing in it (a library's
    default device included) touches another worker's GPU; returns the torch device to use.
    Call before CUDA is initialised. Other devices are returned as they are."""
    match = re.fullmatch(r"cuda:(\d+)", device)
    if match is None:
        return device
    index = int(match[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [part.strip() for part in visible.split(",")] if visible is not None else None
    if ids is not None and index >= len(ids):
        raise ConfigError(f"{device} is not one of the GPUs CUDA_VISIBLE_DEVICES={visible} shows.")
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[index] if ids is not None else str(index)
    return "cuda:0"
