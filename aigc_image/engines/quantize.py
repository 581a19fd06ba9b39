"""Quantization at load, as an entry's ``quantization`` key says.

* ``int8``: torchao int8 weight-only: every linear layer's weights stored in int8 with a scale per
  output channel, computed in the model's dtype. Runs on CPUs and any GPU.
* ``float8``: torchao float8 weights and activations (row-wise scales), on GPUs with float8
  matrix units (compute capability 8.9: Ada, Hopper, Blackwell).
* ``nf4``: bitsandbytes 4-bit NormalFloat weights, computed in the model's dtype; diffusers
  quantizes them on a CUDA GPU only.
* ``gguf``: the denoiser comes from a GGUF file (``denoiser_file``: Q8_0, Q4_K...), kept quantized and
  dequantized layer by layer as it runs (diffusers' GGUF support).

int8, float8 and nf4 apply to the denoiser and the text encoders, the large parts; the VAE stays in
the model's dtype (small, and the most sensitive to precision). They are applied while the weights
load (diffusers' ``PipelineQuantizationConfig``), so the full-precision model never exists in memory.
A quantization the device cannot run is refused before anything loads, with the reason
(hardware.quantization_problem, which the hardware-aware default also asks).
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch
import transformers

from aigc_image.catalog import ModelEntry
from aigc_image.errors import ModelUnavailable
from aigc_image.hardware import quantization_problem

QUANTIZED_COMPONENTS = ("transformer", "unet", "text_encoder", "text_encoder_2", "text_encoder_3")


def check(entry: ModelEntry, device: torch.device) -> None:
    """Refuse, with the reason, a quantization ``device`` cannot run."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    problem = quantization_problem(entry.quantization, device.type, capability)
    if problem:
        raise ModelUnavailable(f"Model {entry.label}: quantization {entry.quantization} cannot run here: {problem}.")


def pipeline_config(entry: ModelEntry, pipeline_class: Any, dtype: torch.dtype, skip: set[str]) -> Any:
    """diffusers' quantization config for ``from_pretrained`` of ``pipeline_class`` (None: none to apply).
    ``skip``: components given ready-made (a single-file denoiser)."""
    if entry.quantization in ("none", "gguf"):
        return None
    names = [n for n in inspect.signature(pipeline_class.__init__).parameters if n in QUANTIZED_COMPONENTS]
    wanted = [name for name in names if name not in skip]
    mapping = {name: component_config(entry.quantization, dtype, text=name.startswith("text")) for name in wanted}
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def component_config(quantization: str, dtype: torch.dtype, text: bool) -> Any:
    """One component's quantization config: transformers' classes for text encoders, diffusers' for the rest."""
    library = transformers if text else diffusers
    if quantization == "nf4":
        return library.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, PerRow

    if quantization == "int8":
        return library.TorchAoConfig(Int8WeightOnlyConfig())
    return library.TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def gguf_config(dtype: torch.dtype) -> Any:
    return diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
