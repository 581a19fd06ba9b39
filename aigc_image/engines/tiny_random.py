"""The ``tiny-random`` model: a real StableDiffusionPipeline with small random weights.

Built locally and deterministically (fixed seeds, no network), the way diffusers'
own tests build dummy components. Its images are noise; it exists so the whole
service can run and be tested anywhere. Sizes: a 4-level VAE (8x down-sampling, no
mid-block attention), a 2-level UNet with cross-attention only at the lower level, a
2-layer CLIP text encoder, and a byte-level CLIP tokenizer written in code.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TEXT_DIM = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE tokenizers (GPT-2, CLIP, Qwen) spell bytes with."""
    return list(_bytes_to_unicode().values())


def build_tokenizer() -> CLIPTokenizer:
    """Byte-level CLIP tokenizer: 256 byte symbols, their end-of-word forms, two specials."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def sd_vae(**config: Any) -> AutoencoderKL:
    """The SD/SDXL AutoencoderKL: four levels (8× down-sampling), 4 latent channels; small unless
    ``config`` says otherwise (bench/full_size.py builds the real one with it, and FLUX.1's 16-channel one)."""
    small = {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64,
             "mid_block_add_attention": False, "latent_channels": 4}  # fmt: skip
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **(small | config),
    ).eval()


def build_pipeline() -> StableDiffusionPipeline:
    # 1. Text encoder: 2 layers; eos is the largest id so CLIP's argmax pooling finds it.
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )
    # 2. UNet: two levels, cross-attention at the lower one only.
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    # 3. VAE: four levels (scale factor 8) with small channels, no mid-block attention.
    torch.manual_seed(0)
    vae = sd_vae()
    # 4. Scheduler, as in diffusers' Stable Diffusion tests.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
