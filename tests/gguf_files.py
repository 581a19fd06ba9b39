"""Tiny GGUF files of a tiny denoiser, written with the ``gguf`` package as llama.cpp's tools write
them (the same file type as the community's Q8_0 / Q4_K quantizations of Qwen-Image, Z-Image, FLUX)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch


def write_gguf(state_dict: dict[str, torch.Tensor], path: Path, qtype: str = "Q8_0") -> Path:
    """``state_dict`` (a denoiser's, in the key layout its single-file loader expects) as a GGUF file:
    every matrix whose rows are whole blocks of ``qtype`` (Q8_0, Q4_0: 32 values; the K types: 256)
    quantized, the rest float32, as llama.cpp's converters leave norms and biases."""
    quant = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[quant][0]
    writer = gguf.GGUFWriter(str(path), arch="diffusion")
    for name, tensor in state_dict.items():
        values = tensor.detach().float().numpy()
        if values.ndim == 2 and values.shape[-1] % block == 0:
            packed = gguf.quants.quantize(values, quant)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=quant)
        else:
            writer.add_tensor(name, np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
