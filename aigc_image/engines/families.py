"""How each diffusers pipeline class is called: one explicit table, one row per class.

Every column exists because a class would otherwise serve a request wrongly:

* ``cfg``: how a request's guidance scale reaches the pipeline.
  - ``classic``: the pipeline's ``guidance_scale``; classifier-free guidance runs above 1 (Z-Image:
    above 0) with the negative prompt, or an empty one.
  - ``true_cfg``: ``true_cfg_scale`` (Qwen-Image): a second pass with the negative prompt, which
    must be given for it to run at all (" " when the request has none, as the model cards do).
  - ``guider``: guidance lives in guider components (HunyuanImage-2.1), replaced for the call by
    copies with the request's scale; a guidance-distilled checkpoint (its transformer has
    ``guidance_embeds``) takes ``distilled_guidance_scale`` instead.
  - ``none``: the model takes no guidance (a step-distilled FLUX.2 klein, whose pipeline config says
    ``is_distilled``): a request's guidance scale would be ignored, so its entry says
    ``guidance = false`` and the API refuses one.
* ``negative_prompt``: whether it takes a negative prompt at all (FLUX.2 klein does not).
* ``size_multiple``: what both sides must be multiples of: its VAE's compression times the
  denoiser's patch, or more where the pipeline floors sizes to more (Qwen-Image 2.1 groups
  latents 2×2: 32). Sizes are rounded to it instead of letting the pipeline floor or snap them.
* ``references``: how the class takes ``ImageInfos``: ``img2img`` (one image at the output size and a
  strength), ``edit`` (up to ``max_references`` images as they are; they apply to every prompt of a
  call, so such a call serves one request) or ``none`` (a text-to-image class, whose entry may name an
  image class of its family in ``image_pipeline``).
* ``prompt_lists``: whether one call may serve several requests' prompts. Qwen-Image 2.1's rotary
  positions advance over a shorter prompt's padding, so a prompt batched with a longer one comes out
  differently than alone: it gets one call per request.
* ``schedulers``: the scheduler kind its samplers come from (engines/samplers.py): ``ddpm`` (the
  Stable Diffusion family's discrete-time schedulers) or ``flow`` (flow matching); ``samplers``
  narrows them where one does not work with the family (Z-Image passes its sigmas as a list, which
  UniPC cannot take).
* ``call_options``: fixed arguments: HunyuanDiT's resolution binning, which snaps every size to one
  of its own, is turned off.
* ``latents``: how its latents are laid out between steps, for panoramas (engines/seamless.py rolls
  them along x): ``grid`` (batch, channels, height, width), ``packed`` (a sequence of the latent
  grid's 2×2 patches: Qwen-Image, FLUX.2), or ``none``: a layout the roll would break (Qwen-Image
  2.1 attends in 2×2 groups of single-latent tokens), so it offers no panoramas.

A class not in the table (an operator's pipeline) is read from its ``__call__`` signature
(``inferred``); tests/test_families.py checks that every row agrees with its class's signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aigc_image.catalog import ModelEntry, Sampler
from aigc_image.engines.samplers import Schedulers, offered

Cfg = Literal["classic", "true_cfg", "guider", "none"]
References = Literal["img2img", "edit", "none"]
Latents = Literal["grid", "packed", "none"]


@dataclass(frozen=True)
class Family:
    name: str  # the model family, as docs and errors name it
    cfg: Cfg
    negative_prompt: bool
    size_multiple: int
    references: References
    max_references: int = 0
    prompt_lists: bool = True
    schedulers: Schedulers = "ddpm"
    samplers: tuple[Sampler, ...] = ()  # () = every sampler of its scheduler kind
    call_options: Mapping[str, Any] = field(default_factory=dict)
    latents: Latents = "grid"

    def offered_samplers(self) -> list[Sampler]:
        return list(self.samplers) if self.samplers else offered(self.schedulers)


SD = Family("Stable Diffusion", "classic", True, 8, "none")
SDXL = Family("Stable Diffusion XL", "classic", True, 8, "none")
ZIMAGE = Family("Z-Image", "classic", True, 16, "none", schedulers="flow", samplers=("Euler", "Euler a"))
QWEN_EDIT = Family(
    "Qwen-Image-Edit", "true_cfg", True, 16, "edit", 3, prompt_lists=False, schedulers="flow", latents="packed"
)

FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": SD,
    "StableDiffusionImg2ImgPipeline": replace(SD, references="img2img", max_references=1),
    "StableDiffusionXLPipeline": SDXL,
    "StableDiffusionXLImg2ImgPipeline": replace(SDXL, references="img2img", max_references=1),
    "HunyuanDiTPipeline": Family(
        "HunyuanDiT", "classic", True, 16, "none", call_options={"use_resolution_binning": False}
    ),
    "HunyuanImagePipeline": Family("HunyuanImage-2.1", "guider", True, 32, "none", schedulers="flow"),
    "QwenImagePipeline": Family("Qwen-Image", "true_cfg", True, 16, "none", schedulers="flow", latents="packed"),
    "QwenImageEditPlusPipeline": QWEN_EDIT,
    "QwenImage21Pipeline": Family(
        "Qwen-Image 2.1", "true_cfg", True, 32, "edit", 10, prompt_lists=False, schedulers="flow", latents="none"
    ),
    "ZImagePipeline": ZIMAGE,
    "ZImageImg2ImgPipeline": replace(ZIMAGE, references="img2img", max_references=1),
    "Flux2KleinPipeline": Family("FLUX.2 klein", "classic", False, 16, "edit", 4, schedulers="flow", latents="packed"),
}


# References an editing class not in the table may take: its entry's max_reference_images bounds them.
UNKNOWN_EDIT_REFERENCES = 16


def family_of(pipe: Any) -> Family:
    """The row of ``pipe``'s class, or what its signature says for a class not in the table."""
    return FAMILIES.get(type(pipe).__name__) or inferred(pipe)


def cfg_of(pipe: Any, family: Family) -> Cfg:
    """The family's guidance, as this checkpoint has it: a step-distilled FLUX.2 klein takes none."""
    if family.cfg == "classic" and getattr(getattr(pipe, "config", None), "is_distilled", False):
        return "none"
    return family.cfg


def distilled_guidance(pipe: Any) -> bool:
    """Whether the denoiser takes guidance as an input (guidance-distilled) rather than by CFG."""
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    return bool(getattr(config, "guidance_embeds", False))


def inferred(pipe: Any) -> Family:
    """A family read from ``__call__``'s parameters and the pipeline's components."""
    accepted = inspect.signature(pipe.__call__).parameters
    cfg: Cfg = "none"
    if "true_cfg_scale" in accepted:
        cfg = "true_cfg"
    elif "distilled_guidance_scale" in accepted:
        cfg = "guider"
    elif "guidance_scale" in accepted:
        cfg = "classic"
    references: References = "none"
    if "image" in accepted:
        references = "img2img" if "strength" in accepted else "edit"
    options = {"use_resolution_binning": False} if "use_resolution_binning" in accepted else {}
    flow = "FlowMatch" in type(getattr(pipe, "scheduler", None)).__name__
    return Family(
        type(pipe).__name__, cfg, "negative_prompt" in accepted, computed_size_multiple(pipe), references,
        1 if references == "img2img" else (UNKNOWN_EDIT_REFERENCES if references == "edit" else 0),
        schedulers="flow" if flow else "ddpm", call_options=options,
        latents="packed" if hasattr(pipe, "_pack_latents") else "grid",
    )  # fmt: skip


def computed_size_multiple(pipe: Any) -> int:
    """The VAE's scale times the denoiser's patch: what a pipeline not in the table needs."""
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    denoiser = getattr(pipe, "transformer", None)
    patch = getattr(getattr(denoiser, "config", None), "patch_size", 1) or 1
    if isinstance(patch, list | tuple):
        patch = max(patch)
    return vae_scale * int(patch)


def disagreements(entry: ModelEntry, pipe: Any) -> list[str]:
    """What ``entry`` promises that its loaded pipeline cannot do: each one would make a request be
    ignored or fail, so the model refuses to load instead, saying which key to change."""
    family = family_of(pipe)
    found = []
    if entry.guidance and cfg_of(pipe, family) == "none":
        found.append(f"{family.name} is step-distilled and takes no guidance scale: set guidance = false")
    if entry.negative_prompt and not family.negative_prompt:
        found.append(f"{family.name} takes no negative prompt: set negative_prompt = false")
    if entry.size_multiple % family.size_multiple:
        found.append(f"{family.name} makes sides in multiples of {family.size_multiple}: size_multiple must be one")
    if unknown := [name for name in entry.samplers if name not in family.offered_samplers()]:
        found.append(
            f"{family.name} has no sampler {', '.join(unknown)}; it offers {', '.join(family.offered_samplers())}"
        )
    if entry.panorama and family.latents == "none":
        found.append(f"{family.name} cannot make panoramas (its latents cannot be rolled): set panorama = false")
    edits = FAMILIES.get(entry.image_pipeline)  # None: a class resolved at load (AutoPipelineForImage2Image)
    if entry.max_reference_images and edits is not None:
        if edits.references == "none":
            found.append(f"{edits.name} takes no reference images: set max_reference_images = 0")
        elif entry.max_reference_images > edits.max_references:
            found.append(f"{edits.name} takes at most {edits.max_references} reference images")
        if entry.reference_strength and edits.references == "edit":
            found.append(f"{edits.name} edits its references and takes no strength: set reference_strength = false")
    return found
