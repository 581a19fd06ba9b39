"""Full-size pipelines with random weights, built from the real models' configs (no download).

The configs are those of the public model repositories' ``config.json`` files (perf-anchors §5.1),
and each denoiser's parameter count is checked against the published one, so a timing on these is
a timing of the real architecture. Weights are random, so the images are noise; GPU time does not
depend on the values. Tokenizers are the byte-level ones of tests/tiny_models.py (real classes,
small vocabularies): they change which ids a prompt becomes, not the shapes the models see.

One stand-in, said where it is used: Qwen-Image's text encoder is a 2-layer Qwen2.5-VL of the real
width (3584) instead of the 28-layer 7B one, because only the denoiser's cost is measured on it
(the prompt is encoded once per image, under 0.2% of the image's FLOPs). The families added since
(Z-Image-Turbo, FLUX.2 klein 4B, Qwen-Image 2.1) have their real text encoders (Qwen3 4B, Qwen3-VL
8B), since their memory, quantized or not, is what the catalogue's figures come from.

    .venv/bin/python -m bench.full_size      # builds each on the meta device and checks the counts
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    AutoencoderKLQwenImage21,
    DDPMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    HunyuanDiT2DModel,
    HunyuanDiTPipeline,
    QwenImage21Pipeline,
    QwenImage21Transformer2DModel,
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
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
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

from aigc_image.engines.processors import ImageOnlyQwen3VLProcessor
from aigc_image.engines.tiny_random import build_tokenizer as clip_tokenizer
from aigc_image.engines.tiny_random import sd_vae
from tests.tiny_models import (
    QWEN3_CHAT_TEMPLATE,
    QWEN_SPECIALS,
    _qwen_parts,
    qwen3_tokenizer,
    qwen_text_encoder,
    qwen_tokenizer,
)

Device = torch.device | str
# Published parameter counts of the denoisers, in millions (model cards; perf-anchors §1.1).
DENOISER_PARAMS = {
    "sd-turbo": 865.9, "sdxl": 2567.5, "hunyuan-dit": 1500.0, "qwen-image": 20430.0,
    "z-image-turbo": 6150.0,  # "6.15B" (the Z-Image paper and model card)
    "flux2-klein-4b": 4000.0,  # "4B" (Black Forest Labs' announcement)
    "qwen-image-2.1": 7000.0,  # "7B parameters in its visual generation component" (the Qwen-Image 2.1 README)
}  # fmt: skip
# Rounded on their model cards; the others are exact.
TOLERANCE = {"hunyuan-dit": 0.05, "z-image-turbo": 0.02, "flux2-klein-4b": 0.05, "qwen-image-2.1": 0.05}


@contextmanager
def building(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Modules built inside are made on ``device`` in ``dtype`` directly: a 20B model never
    exists in float32, and ``meta`` builds none of the memory (for counting)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _sd_vae(scaling_factor: float = 0.18215, force_upcast: bool = True) -> AutoencoderKL:
    return sd_vae(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=1024,
        mid_block_add_attention=True, scaling_factor=scaling_factor, force_upcast=force_upcast,
    )  # fmt: skip


def _clip(cls: type[Any], hidden: int, layers: int, heads: int, act: str, projection: int) -> Any:
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, projection_dim=projection,
        bos_token_id=512, eos_token_id=513, pad_token_id=513,  # the byte-level tokenizer's ids
    )  # fmt: skip
    return cls(config).eval()


def _euler(spacing: str) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon",
        steps_offset=1, timestep_spacing=spacing,
    )  # fmt: skip


def sd_turbo(device: Device, dtype: torch.dtype) -> StableDiffusionPipeline:
    """stabilityai/sd-turbo: the SD 2.1 UNet, OpenCLIP-H's text tower (23 layers), the SD VAE."""
    with building(device, dtype):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32,
        ).eval()  # fmt: skip
        vae, text_encoder = _sd_vae(), _clip(CLIPTextModel, 1024, 23, 16, "gelu", 512)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet, scheduler=_euler("trailing"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def sdxl(device: Device, dtype: torch.dtype) -> StableDiffusionXLPipeline:
    """stabilityai/stable-diffusion-xl-base-1.0 (SDXL-Turbo has the same UNet): CLIP-L, OpenCLIP-bigG."""
    with building(device, dtype):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, norm_num_groups=32,
        ).eval()  # fmt: skip
        vae = _sd_vae(scaling_factor=0.13025)
        clip_l = _clip(CLIPTextModel, 768, 12, 12, "quick_gelu", 768)
        clip_g = _clip(CLIPTextModelWithProjection, 1280, 32, 20, "gelu", 1280)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=clip_l, text_encoder_2=clip_g, tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(), unet=unet, scheduler=_euler("leading"), force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )  # fmt: skip


def hunyuan_dit(device: Device, dtype: torch.dtype) -> HunyuanDiTPipeline:
    """Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers: the 40-layer DiT, a 24-layer BERT (large) and the
    mT5-XL encoder, the SDXL VAE (fp16-fix config)."""
    with building(device, dtype):
        transformer = HunyuanDiT2DModel(
            num_attention_heads=16, attention_head_dim=88, in_channels=4, patch_size=2,
            activation_fn="gelu-approximate", sample_size=128, hidden_size=1408, num_layers=40, mlp_ratio=4.3637,
            learn_sigma=True, cross_attention_dim=1024, norm_type="layer_norm", cross_attention_dim_t5=2048,
            pooled_projection_dim=1024, text_len=77, text_len_t5=256, use_style_cond_and_image_meta_size=False,
        ).eval()  # fmt: skip
        bert = BertModel(
            BertConfig(vocab_size=47020, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096, max_position_embeddings=512),
            add_pooling_layer=False,
        ).eval()  # fmt: skip
        mt5 = T5EncoderModel(
            T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32, vocab_size=250112,
                     feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", relative_attention_num_buckets=32,
                     relative_attention_max_distance=128, is_encoder_decoder=False, use_cache=False,
                     tie_word_embeddings=False)
        ).eval()  # fmt: skip
        vae = _sd_vae(scaling_factor=0.13025, force_upcast=False)
    characters = [chr(code) for code in range(33, 127)]
    bert_vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters])}
    t5_vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in characters]
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.03, beta_schedule="scaled_linear", clip_sample=False,
        prediction_type="v_prediction", steps_offset=1, timestep_spacing="leading", variance_type="fixed_small",
    )  # fmt: skip
    return HunyuanDiTPipeline(
        vae=vae, text_encoder=bert,
        tokenizer=BertTokenizer(vocab=bert_vocab), transformer=transformer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        text_encoder_2=mt5, tokenizer_2=T5Tokenizer(vocab=t5_vocab, extra_ids=0),
    )  # fmt: skip


def qwen_image(device: Device, dtype: torch.dtype) -> QwenImagePipeline:
    """Qwen/Qwen-Image: the 60-layer 20B MMDiT (the class defaults are the real model), its VAE,
    its scheduler; the text encoder is the 2-layer stand-in of the module docstring."""
    tokenizer = qwen_tokenizer()
    with building(device, dtype):
        transformer, vae = QwenImageTransformer2DModel().eval(), AutoencoderKLQwenImage().eval()
        text_encoder = qwen_text_encoder(tokenizer, 3584)
    return QwenImagePipeline(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=_qwen_parts()["scheduler"],  # the real scheduler configuration
    )  # fmt: skip


def _qwen3(layers_class: type[Any], hidden: int, layers: int, intermediate: int) -> Any:
    """Qwen3 (4B: 2560 wide, 36 layers) with the byte-level tokenizer's ids; the real vocabulary's size."""
    config = Qwen3Config(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960, tie_word_embeddings=True,
        rope_theta=1000000.0,
    )  # fmt: skip
    return layers_class(config).eval()


def z_image_turbo(device: Device, dtype: torch.dtype) -> ZImagePipeline:
    """Tongyi-MAI/Z-Image-Turbo: the 30-layer 3840-wide S3-DiT (the class defaults are the real model),
    Qwen3 4B as its text encoder, FLUX.1's 16-channel VAE, FlowMatchEuler with shift 3."""
    with building(device, dtype):
        transformer = ZImageTransformer2DModel().eval()
        text_encoder = _qwen3(Qwen3Model, 2560, 36, 9728)
        vae = sd_vae(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=1024,
            mid_block_add_attention=True, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
        )  # fmt: skip
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False), vae=vae,
        text_encoder=text_encoder, tokenizer=qwen3_tokenizer(), transformer=transformer,
    )  # fmt: skip


def flux2_klein_4b(device: Device, dtype: torch.dtype) -> Flux2KleinPipeline:
    """black-forest-labs/FLUX.2-klein-4B: 5 double- and 20 single-stream blocks, 3072 wide, reading
    three layers of Qwen3 4B (3 × 2560), the FLUX.2 VAE (the class defaults), step-distilled."""
    with building(device, dtype):
        transformer = Flux2Transformer2DModel(
            num_layers=5, num_single_layers=20, attention_head_dim=128, num_attention_heads=24,
            joint_attention_dim=3 * 2560, guidance_embeds=False,
        ).eval()  # fmt: skip
        text_encoder = _qwen3(Qwen3ForCausalLM, 2560, 36, 9728)
        vae = AutoencoderKLFlux2().eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, shift=3.0,
        use_dynamic_shifting=True,
    )  # fmt: skip
    return Flux2KleinPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=qwen3_tokenizer(), transformer=transformer,
        is_distilled=True,
    )  # fmt: skip


def qwen_image_21(device: Device, dtype: torch.dtype) -> QwenImage21Pipeline:
    """Qwen/Qwen-Image-2.1: the 32-layer single-stream DiT and its RGBA VAE (the class defaults are the
    real model), and the Qwen3-VL 8B encoder that reads prompt and references."""
    tokenizer = qwen3_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    with building(device, dtype):
        transformer = QwenImage21Transformer2DModel().eval()
        vae = AutoencoderKLQwenImage21().eval()
        config = Qwen3VLConfig(
            text_config={
                "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20]},
            },
            vision_config={
                "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 4096,
                "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
                "deepstack_visual_indexes": [8, 16, 24],
            },
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        )  # fmt: skip
        text_encoder = Qwen3VLForConditionalGeneration(config).eval()
    processor = ImageOnlyQwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer, chat_template=QWEN3_CHAT_TEMPLATE,
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
    )
    return QwenImage21Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, processor=processor, transformer=transformer
    )


BUILDERS: dict[str, Callable[[Device, torch.dtype], DiffusionPipeline]] = {
    "sd-turbo": sd_turbo,
    "sdxl": sdxl,
    "hunyuan-dit": hunyuan_dit,
    "qwen-image": qwen_image,
    "z-image-turbo": z_image_turbo,
    "flux2-klein-4b": flux2_klein_4b,
    "qwen-image-2.1": qwen_image_21,
}


def build(name: str, device: torch.device | str, dtype: torch.dtype) -> DiffusionPipeline:
    pipe = BUILDERS[name](device, dtype)
    check(name, pipe)
    return pipe


def denoiser(pipe: DiffusionPipeline) -> torch.nn.Module:
    return getattr(pipe, "transformer", None) or pipe.unet


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def check(name: str, pipe: DiffusionPipeline) -> None:
    """The denoiser has the published size, or this is not the model it claims to be."""
    counted, published = millions(denoiser(pipe)), DENOISER_PARAMS[name]
    if abs(counted - published) > TOLERANCE.get(name, 0.001) * published:
        raise AssertionError(f"{name}: denoiser has {counted:.1f} M parameters, the real one {published:.1f} M")


def weight_gib(pipe: DiffusionPipeline, dtype_bytes: int, quantization: str = "none") -> float:
    """GiB of the pipeline's weights stored in ``dtype_bytes`` per value, its denoiser and text encoders'
    linear layers quantized as the engine does it (engines/quantize.py): int8 and float8 keep one byte
    per weight and a float32 scale per output row; nf4 half a byte and a scale per 64 weights."""
    per_weight = {"none": float(dtype_bytes), "int8": 1.0, "float8": 1.0, "nf4": 0.5 + 4 / 64}[quantization]
    total = 0.0
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        quantized = quantization != "none" and name in ("transformer", "unet", "text_encoder", "text_encoder_2")
        for layer in module.modules():
            own = [p for p in layer.parameters(recurse=False)]
            if quantized and isinstance(layer, torch.nn.Linear):
                rows, columns = layer.weight.shape
                total += rows * columns * per_weight + (rows * 4 if quantization != "nf4" else 0)
                own = [p for p in own if p is not layer.weight]
            total += sum(p.numel() for p in own) * dtype_bytes
    return total / 2**30


def main() -> None:
    for name in BUILDERS:
        pipe = build(name, "meta", torch.bfloat16)
        parts = {key: millions(m) for key, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
        print(f"{name:14s} " + ", ".join(f"{key} {count:,.1f} M" for key, count in parts.items()))
        sizes = {"bf16": weight_gib(pipe, 2), "int8": weight_gib(pipe, 2, "int8"), "nf4": weight_gib(pipe, 2, "nf4"),
                 "fp32 (CPU)": weight_gib(pipe, 4), "int8 (CPU)": weight_gib(pipe, 4, "int8")}  # fmt: skip
        print(f"{'':14s} weights: " + ", ".join(f"{key} {gib:.1f} GiB" for key, gib in sizes.items()))


if __name__ == "__main__":
    main()
