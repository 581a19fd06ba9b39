"""Tiny LoRA adapters for the tiny copies, made with peft as a trainer makes them, saved in diffusers'
LoRA file format (``save_lora_weights``): random, so that an adapter visibly changes the pixels."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


def make_lora(model_folder: Path, out: Path, name: str, seed: int, rank: int = 4) -> Path:
    """A LoRA of the denoiser of the diffusers model in ``model_folder`` (its attention projections),
    saved as ``out/name.safetensors``; returns that file."""
    pipe = DiffusionPipeline.from_pretrained(model_folder, dtype=torch.float32)
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    torch.manual_seed(seed)
    # init_lora_weights=False: both matrices random (a trainer's B starts at zero and learns).
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=ATTENTION, init_lora_weights=False))
    layers = get_peft_model_state_dict(denoiser)
    type(pipe).save_lora_weights(out, **{f"{denoiser_name}_lora_layers": layers}, weight_name=f"{name}.safetensors")
    return out / f"{name}.safetensors"
