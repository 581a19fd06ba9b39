"""Tiny random-weight copies of every pipeline class the built-in model catalogue names.

Each is built offline and deterministically with the component classes of the real checkpoint
(text encoders, tokenizers, VAE, scheduler type and settings), only small: a few layers, a few
channels, and tokenizers written in code instead of downloaded. ``save_tiny(name, folder)`` saves
one with ``save_pretrained``, so tests load it through the engine's own ``from_pretrained`` path,
as an operator's local model folder.

Sizes kept small on purpose: every pipeline here generates a 64×64 image in well under a second on
one CPU core, and each saved folder is a few hundred KB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AdaptiveProjectedMixGuidance,
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLHunyuanImage,
    AutoencoderKLQwenImage,
    AutoencoderKLQwenImage21,
    DDPMScheduler,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    HunyuanDiT2DModel,
    HunyuanDiTPipeline,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
    QwenImage21Pipeline,
    QwenImage21Transformer2DModel,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    ByT5Tokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from aigc_image.engines.processors import ImageOnlyQwen2VLProcessor, ImageOnlyQwen3VLProcessor
from aigc_image.engines.tiny_random import build_tokenizer as clip_tokenizer
from aigc_image.engines.tiny_random import byte_symbols, sd_vae

# Special tokens of Qwen2.5-VL's tokenizer that the Qwen-Image and HunyuanImage prompt templates use.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_tokenizer() -> Qwen2Tokenizer:
    """Qwen2's byte-level BPE tokenizer with no merges: one token per UTF-8 byte, plus the specials."""
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    return tokenizer


# Qwen3's chat template, reduced to what the pipelines use: text or text-and-image turns, and the
# empty thinking block that enable_thinking=False adds (FLUX.2 klein).
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages -%}<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- else -%}<|vision_start|><|image_pad|><|vision_end|>{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|im_end|>\n{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and not enable_thinking -%}<think>\n\n</think>\n\n{%- endif -%}"
    "{%- endif -%}"
)


def qwen3_tokenizer() -> Qwen2Tokenizer:
    """Qwen3's tokenizer as Qwen2Tokenizer (its class): bytes, the specials, the thinking tags, the chat template."""
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": [*QWEN_SPECIALS, "<think>", "</think>"]})
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def qwen_text_encoder(tokenizer: Qwen2Tokenizer, hidden: int) -> Qwen2_5_VLForConditionalGeneration:
    """Qwen2.5-VL with a 2-layer language model and a 2-block vision tower."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            # Multimodal RoPE sections: a quarter, a quarter and a half of the head's rotary pairs.
            "rope_scaling": {"mrope_section": [hidden // 16, hidden // 16, hidden // 8], "rope_type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": hidden,
        },
        hidden_size=hidden,
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def stable_diffusion_2() -> StableDiffusionPipeline:
    """SD-Turbo's classes: an SD 2.x UNet (linear projections), OpenCLIP-H's CLIPTextModel (gelu),
    the SD VAE, and its EulerDiscreteScheduler with trailing timesteps."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    return StableDiffusionPipeline(
        vae=_sd_vae(),
        text_encoder=_clip_text(CLIPTextModel, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            prediction_type="epsilon",
            steps_offset=1,
            timestep_spacing="trailing",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def stable_diffusion_xl() -> StableDiffusionXLPipeline:
    """SDXL-Turbo's classes: the SDXL UNet (text-time conditioning), CLIP-L and OpenCLIP-bigG with
    projection, the SDXL VAE, and EulerAncestralDiscreteScheduler with trailing timesteps."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + the pooled 32
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    return StableDiffusionXLPipeline(
        vae=_sd_vae(scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip_text(CLIPTextModel, hidden_act="quick_gelu"),
        text_encoder_2=_clip_text(CLIPTextModelWithProjection, hidden_act="gelu"),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            prediction_type="epsilon",
            steps_offset=1,
            timestep_spacing="trailing",
        ),
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )


def hunyuan_dit() -> HunyuanDiTPipeline:
    """HunyuanDiT v1.2's classes: HunyuanDiT2DModel without style conditioning, a BERT text encoder
    with its BertTokenizer, an mT5 encoder with T5Tokenizer, the SD VAE, and DDPMScheduler
    (v-prediction) as its model repository configures it."""
    torch.manual_seed(0)
    transformer = HunyuanDiT2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        cross_attention_dim=32,
        cross_attention_dim_t5=32,
        pooled_projection_dim=16,
        hidden_size=16,
        activation_fn="gelu-approximate",
        use_style_cond_and_image_meta_size=False,
    )
    characters = [chr(code) for code in range(33, 127)] + list("一二三四五六七八九十人大小山水火日月灯塔")
    bert_vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters])}
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(bert_vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=80,
        ),
    ).eval()
    t5_vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in characters]
    return HunyuanDiTPipeline(
        vae=_sd_vae(),
        text_encoder=bert,
        tokenizer=BertTokenizer(vocab=bert_vocab),
        transformer=transformer,
        scheduler=DDPMScheduler(
            beta_start=0.00085,
            beta_end=0.03,
            beta_schedule="scaled_linear",
            clip_sample=False,
            prediction_type="v_prediction",
            steps_offset=1,
            timestep_spacing="leading",
            variance_type="fixed_small",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        text_encoder_2=_t5_encoder(len(t5_vocab)),
        tokenizer_2=T5Tokenizer(vocab=t5_vocab, extra_ids=0),
    )


def hunyuan_image() -> HunyuanImagePipeline:
    """HunyuanImage-2.1's classes: HunyuanImageTransformer2DModel, Qwen2.5-VL and ByT5 text
    encoders, AutoencoderKLHunyuanImage, FlowMatchEuler (shift 5) and its two APG guiders."""
    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    transformer = HunyuanImageTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=(1, 1),
        guidance_embeds=False,
        text_embed_dim=32,
        text_embed_2_dim=32,
        rope_axes_dim=(4, 4),
    )
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanImage(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 32, 32, 32),  # its GroupNorms have 32 groups
        layers_per_block=1,
        scaling_factor=0.75289,
        spatial_compression_ratio=8,
        sample_size=64,
    )
    return HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        vae=vae.eval(),
        text_encoder=qwen_text_encoder(tokenizer, 32),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(384, d_model=32),  # ByT5's 256 bytes + 3 specials + 125 extra ids
        tokenizer_2=ByT5Tokenizer(),
        transformer=transformer.eval(),
        guider=AdaptiveProjectedMixGuidance(
            guidance_scale=3.5, adaptive_projected_guidance_scale=10.0, adaptive_projected_guidance_start_step=5
        ),
        ocr_guider=AdaptiveProjectedMixGuidance(
            guidance_scale=3.5, adaptive_projected_guidance_scale=10.0, adaptive_projected_guidance_start_step=38
        ),
    )


def _qwen_parts() -> dict[str, Any]:
    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # 8× down-sampling, as the real one
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    return {
        "vae": vae.eval(),
        "text_encoder": qwen_text_encoder(tokenizer, 16),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def _qwen_transformer() -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ).eval()


def qwen_image() -> QwenImagePipeline:
    """Qwen-Image's classes: QwenImageTransformer2DModel, the Qwen2.5-VL text encoder with its
    Qwen2Tokenizer, AutoencoderKLQwenImage and dynamically shifted FlowMatchEuler."""
    return QwenImagePipeline(transformer=_qwen_transformer(), **_qwen_parts())


def qwen_image_edit_plus() -> QwenImageEditPlusPipeline:
    """Qwen-Image-Edit-2509's classes: QwenImageEditPlusPipeline adds a Qwen2VLProcessor (the
    reference images go through the vision tower) to Qwen-Image's."""
    parts = _qwen_parts()
    processor = ImageOnlyQwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=parts["tokenizer"])
    return QwenImageEditPlusPipeline(transformer=_qwen_transformer(), processor=processor, **parts)


def z_image() -> ZImagePipeline:
    """Z-Image-Turbo's classes: ZImageTransformer2DModel, a Qwen3 text encoder (Qwen3Model) with its
    tokenizer and chat template, FLUX.1's AutoencoderKL (16 latent channels, scaling and shift), and
    FlowMatchEuler with the turbo's fixed shift of 3."""
    tokenizer = qwen3_tokenizer()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 64, 64],
    )  # fmt: skip
    with torch.no_grad():  # made with torch.empty: NaNs here and there unless set
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(0)
    text_encoder = Qwen3Model(_qwen3_config(tokenizer, layers=2)).eval()
    torch.manual_seed(0)
    vae = sd_vae(latent_channels=16, block_out_channels=(8, 16, 16, 16), scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer.eval(),
    )  # fmt: skip


def flux2_klein() -> Flux2KleinPipeline:
    """FLUX.2 klein 4B's classes: Flux2Transformer2DModel without guidance embedding (step-distilled),
    a Qwen3ForCausalLM text encoder read at layers 9, 18 and 27 (so 28 tiny layers), the FLUX.2 VAE
    with its batch-normalised 2×2-patch latents, and dynamically shifted FlowMatchEuler."""
    tokenizer = qwen3_tokenizer()
    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )  # fmt: skip
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(_qwen3_config(tokenizer, layers=28)).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, mid_block_add_attention=False,
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, shift=3.0,
        use_dynamic_shifting=True,
    )  # fmt: skip
    return Flux2KleinPipeline(
        scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer.eval(), is_distilled=True,
    )  # fmt: skip


def qwen_image_21() -> QwenImage21Pipeline:
    """Qwen-Image 2.1's classes: the single-stream block-causal QwenImage21Transformer2DModel, a
    Qwen3-VL text encoder that also sees the reference images through its Qwen3VLProcessor, the
    16×-compressing RGBA AutoencoderKLQwenImage21, and dynamically shifted FlowMatchEuler."""
    z_dim, hidden = 8, 16
    tokenizer = qwen3_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    torch.manual_seed(0)
    transformer = QwenImage21Transformer2DModel(
        patch_size=1, in_channels=z_dim, out_channels=z_dim, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, context_in_dim=hidden, mlp_ratio=2, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage21(
        base_dim=4, decoder_base_dim=4, z_dim=z_dim, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True, True], latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
    )  # fmt: skip
    torch.manual_seed(0)
    config = Qwen3VLConfig(
        text_config={
            "hidden_size": hidden, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "head_dim": 8, "vocab_size": len(tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": hidden,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    processor = ImageOnlyQwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=256 * 256
        ),
        tokenizer=tokenizer,
        chat_template=QWEN3_CHAT_TEMPLATE,
    )
    return QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
        ),
        vae=vae.eval(), text_encoder=Qwen3VLForConditionalGeneration(config).eval(), processor=processor,
        transformer=transformer.eval(),
    )  # fmt: skip


def _qwen3_config(tokenizer: Qwen2Tokenizer, layers: int) -> Qwen3Config:
    return Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=1024,
    )  # fmt: skip


def _sd_vae(**config: Any) -> AutoencoderKL:
    torch.manual_seed(0)
    return sd_vae(**config)


def _clip_text(cls: type[Any], hidden_act: str) -> Any:
    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        projection_dim=32,
    )
    return cls(config).eval()


def _t5_encoder(vocab_size: int, d_model: int = 32) -> T5EncoderModel:
    torch.manual_seed(0)
    config = T5Config(
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        vocab_size=vocab_size,
        feed_forward_proj="gated-gelu",
        dense_act_fn="gelu_new",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )
    return T5EncoderModel(config).eval()


BUILDERS: dict[str, Callable[[], DiffusionPipeline]] = {
    "StableDiffusionPipeline": stable_diffusion_2,
    "StableDiffusionXLPipeline": stable_diffusion_xl,
    "HunyuanDiTPipeline": hunyuan_dit,
    "HunyuanImagePipeline": hunyuan_image,
    "QwenImagePipeline": qwen_image,
    "QwenImageEditPlusPipeline": qwen_image_edit_plus,
    "QwenImage21Pipeline": qwen_image_21,
    "ZImagePipeline": z_image,
    "Flux2KleinPipeline": flux2_klein,
}


def save_tiny(pipeline_class: str, folder: Path) -> Path:
    """Build the tiny ``pipeline_class`` and save it as a diffusers model folder (weights in fp16,
    as the real repositories ship them; the engine loads them in its own dtype)."""
    return save_pipeline(BUILDERS[pipeline_class]().to(torch.float16), folder)


def save_pipeline(pipe: DiffusionPipeline, folder: Path) -> Path:
    """``pipe`` as a diffusers model folder that loads as the real repository's does."""
    pipe.save_pretrained(folder)
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text())
    if "processor" in index:
        # Saved without its video half (see engines/processors.py); listed as the real
        # repository lists it, so the folder loads like one.
        index["processor"] = ["transformers", type(pipe.processor).__mro__[1].__name__]
        index_file.write_text(json.dumps(index, indent=2))
    return folder
