"""Engines: code that runs pipelines (diffusers), per-family conventions, quantization, LoRA adapters,
samplers, accelerations and the tiny test model."""

import logging

import torch

if torch.version.cuda is None:
    # On a CPU build of PyTorch, torchao (the `quant` extra) cannot load its CUDA kernels and logs each
    # failure, and two follow-on notices, whenever diffusers imports it; int8 on a CPU needs none of them.
    for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
        logging.getLogger(name).setLevel(logging.ERROR)
