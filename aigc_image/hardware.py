"""What this host can run models on: its GPUs and their memory, or its CPU and RAM.

Read once at start by ``serve`` (to choose a default model when none is configured) and by
``aigc-image models`` (to say what fits). Uses PyTorch's view of the GPUs, so it sees exactly
what a worker on this host will see (``CUDA_VISIBLE_DEVICES`` included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    kind: str  # "cuda" or "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3", or "CPU"
    memory_bytes: int  # memory of the largest GPU, or the host's RAM
    devices: int  # visible GPUs (0 on a CPU host)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def describe(self) -> str:
        if self.kind == "cuda":
            count = f"{self.devices}× " if self.devices > 1 else ""
            return f"{count}{self.name}, {self.memory_gib:.0f} GiB"
        return f"no GPU; {self.memory_gib:.0f} GiB RAM"


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def probe(device: str = "auto") -> Hardware:
    """The hardware a worker with ``worker.device = device`` would use."""
    import torch  # imported here: the API process only needs it for this one look

    if device != "cpu" and torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda:") else None
        indices = [index] if index is not None else list(range(torch.cuda.device_count()))
        largest = max(indices, key=lambda i: torch.cuda.get_device_properties(i).total_memory)
        properties = torch.cuda.get_device_properties(largest)
        return Hardware("cuda", properties.name, properties.total_memory, len(indices))
    return Hardware("cpu", "CPU", ram_bytes(), 0)
