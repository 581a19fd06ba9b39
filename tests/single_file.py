"""A tiny Stable Diffusion 1.x checkpoint in the original single-file layout (the ``.safetensors`` files
A1111 and ComfyUI users keep: ``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``), written from a diffusers pipeline by inverting the key mapping
of diffusers' own single-file loader (diffusers/loaders/single_file_utils.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip


def unet_keys(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    fixed = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    per_level = layers_per_block + 1
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        if match := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.+)", key):
            level, index, part, rest = int(match[1]), int(match[2]), match[3], match[4]
            out[f"input_blocks.{1 + level * per_level + index}.0.{RESNET[part]}.{rest}"] = value
        elif match := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(match[1]) * per_level + int(match[2])}.1.{match[3]}"] = value
        elif match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"input_blocks.{1 + int(match[1]) * per_level + layers_per_block}.0.op.{match[2]}"] = value
        elif match := re.match(r"mid_block\.resnets\.(\d+)\.(\w+)\.(.+)", key):
            out[f"middle_block.{2 * int(match[1])}.{RESNET[match[2]]}.{match[3]}"] = value
        elif match := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            out[f"middle_block.1.{match[1]}"] = value
        elif match := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.+)", key):
            level, index, part, rest = int(match[1]), int(match[2]), match[3], match[4]
            out[f"output_blocks.{level * per_level + index}.0.{RESNET[part]}.{rest}"] = value
        elif match := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(match[1]) * per_level + int(match[2])}.1.{match[3]}"] = value
        elif match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            level = int(match[1])
            attended = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
            out[f"output_blocks.{level * per_level + layers_per_block}.{2 if attended else 1}.conv.{match[2]}"] = value
        else:
            raise KeyError(f"no single-file name for UNet key {key}")
    return out


def vae_keys(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    fixed = {diffusers: ldm for diffusers, ldm in DIFFUSERS_TO_LDM_MAPPING["vae"].items()}
    out = {}
    for key, value in state.items():
        key = key.replace("conv_shortcut", "nin_shortcut")
        if key.replace("nin_shortcut", "conv_shortcut") in fixed:
            out[fixed[key]] = value
        elif match := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"encoder.down.{match[1]}.block.{match[2]}.{match[3]}"] = value
        elif match := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"encoder.down.{match[1]}.downsample.conv.{match[2]}"] = value
        elif match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"] = value
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"decoder.up.{levels - 1 - int(match[1])}.block.{match[2]}.{match[3]}"] = value
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            out[f"decoder.up.{levels - 1 - int(match[1])}.upsample.conv.{match[2]}"] = value
        else:
            raise KeyError(f"no single-file name for VAE key {key}")
    return out


def write_sd1_checkpoint(pipe: Any, path: Path) -> Path:
    """``pipe`` (a StableDiffusionPipeline with a CLIP text encoder) as one original-layout checkpoint."""
    unet = unet_keys(pipe.unet.state_dict(), pipe.unet.config.layers_per_block)
    vae = vae_keys(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    text = {key if key.startswith("text_model.") else f"text_model.{key}": value
            for key, value in pipe.text_encoder.state_dict().items()}  # fmt: skip
    tensors = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    tensors |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    tensors |= {f"cond_stage_model.transformer.{k}": v for k, v in text.items()}
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
    return path
