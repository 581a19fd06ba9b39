"""CreateAigcImageTask's parameters, checked and resolved into the task they ask for.

Everything that can be known without fetching or generating is checked here, before anything is
stored: the model and what it offers, sizes, counts, formats, seeds, reference URLs (as far as
they can be judged before resolving their hosts), the user's bucket. Every default is applied, so
the TaskSpec says exactly what the worker will make.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aigc_image.bounded import ParseLimits
from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.fetch.policy import Network, is_allowed
from aigc_image.media.encode import FORMATS
from aigc_image.protocol import errors
from aigc_image.protocol import params as p
from aigc_image.protocol.additional import MAX_SEED, parse_additional
from aigc_image.protocol.params import DEFAULT_LIMITS
from aigc_image.protocol.sizes import resolve_size
from aigc_image.tasks import PANORAMA, TaskSpec

MAX_OPERATOR_CHARS = 256
MAX_URL_CHARS = 2048
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_PATH = re.compile(r"[A-Za-z0-9!_.*'()/-]*")

CREATE_PARAMS: dict[str, p.Param] = {
    "ModelName": p.STRING,
    "ModelVersion": p.STRING,
    "SceneType": p.STRING,
    "Prompt": p.STRING,
    "NegativePrompt": p.STRING,
    "EnhancePrompt": p.BOOLEAN,
    "ImageInfos": p.array(p.obj(ImageUrl=p.STRING, ReferenceType=p.STRING)),
    "OutputImageCount": p.INTEGER,
    "ExtraParameters": p.obj(AspectRatio=p.STRING, Resolution=p.STRING, LogoAdd=p.INTEGER, OutputFormat=p.STRING),
    "AdditionalParameters": p.STRING,
    "StoreCosParam": p.obj(CosBucketName=p.STRING, CosBucketRegion=p.STRING, CosBucketPath=p.STRING),
    "Operator": p.STRING,
}


@dataclass(frozen=True)
class CreateLimits:
    max_prompt_chars: int
    fetch_allow_networks: tuple[Network, ...] = ()
    accepts_user_buckets: bool = False
    parse: ParseLimits = DEFAULT_LIMITS  # for AdditionalParameters, JSON in a string


def task_spec(
    values: dict[str, Any], catalog: Catalog, limits: CreateLimits, uploaded: tuple[str, ...] = ()
) -> tuple[TaskSpec, ModelEntry]:
    """A checked CreateAigcImageTask request as the task it asks for, every default resolved, and
    the model that will serve it (looked up once, here). ``uploaded``: reference images sent with
    the request itself (the OpenAI-compatible edits endpoint), as ``data:`` URLs."""
    entry = catalog.resolve(values.get("ModelName"), values.get("ModelVersion"))

    references = reference_urls(values.get("ImageInfos", []), entry, limits.fetch_allow_networks)
    if uploaded:
        references = uploaded_references(references + uploaded, entry)
    prompt = values.get("Prompt", "")
    if not prompt.strip() and not references:
        raise errors.MissingParameter(
            "Prompt is required when no reference image (ImageInfos) is given.", param="Prompt"
        )
    negative_prompt = values.get("NegativePrompt", "")
    for name, text in (("Prompt", prompt), ("NegativePrompt", negative_prompt)):
        if len(text) > limits.max_prompt_chars:
            raise errors.InvalidParameterValue(
                f"{name} is {len(text)} characters long; the limit is {limits.max_prompt_chars}.", param=name
            )
    if negative_prompt and not entry.negative_prompt:
        raise errors.ModelNotSupported(f"Model {entry.label} does not support NegativePrompt.", param="NegativePrompt")

    count = values.get("OutputImageCount", 1)
    if not 1 <= count <= entry.max_output_images:
        raise errors.InvalidParameterValue(
            f"OutputImageCount must be between 1 and {entry.max_output_images} for model {entry.label}; got {count}.",
            param="OutputImageCount",
        )
    extra = values.get("ExtraParameters", {})
    output_format = extra.get("OutputFormat", "png")
    if output_format not in FORMATS:
        raise errors.InvalidParameterValue(
            f"ExtraParameters.OutputFormat must be one of {', '.join(FORMATS)}; got {output_format[:40]!r}.",
            param="ExtraParameters.OutputFormat",
        )
    logo = extra.get("LogoAdd", 0)
    if logo not in (0, 1):
        raise errors.InvalidParameterValue(
            f"ExtraParameters.LogoAdd must be 0 or 1; got {logo}.", param="ExtraParameters.LogoAdd"
        )
    operator = values.get("Operator", "")
    if len(operator) > MAX_OPERATOR_CHARS:
        raise errors.InvalidParameterValue(
            f"Operator is longer than {MAX_OPERATOR_CHARS} characters.", param="Operator"
        )
    additional = parse_additional(values.get("AdditionalParameters", ""), limits.parse)
    aspect_ratio, resolution = extra.get("AspectRatio", ""), extra.get("Resolution", "")
    scene_type = values.get("SceneType", "")
    if scene_type not in ("", PANORAMA):
        raise errors.InvalidParameterValue(f"SceneType must be {PANORAMA}; got {scene_type[:40]!r}.", param="SceneType")
    if scene_type and not entry.panorama:
        raise errors.ModelNotSupported(f"Model {entry.label} does not support SceneType {PANORAMA}.")
    generated, delivered = resolve_size(entry, aspect_ratio, resolution, additional.size, bool(scene_type))
    if additional.strength is not None and not references:
        raise errors.InvalidParameter("AdditionalParameters strength applies only with reference images (ImageInfos).")
    if additional.strength is not None and not entry.reference_strength:
        raise errors.ModelNotSupported(
            f"Model {entry.label} edits its reference images as the prompt says; it takes no strength."
        )

    guidance = additional.guidance_scale if additional.guidance_scale is not None else entry.guidance_scale
    if negative_prompt and guidance is not None and guidance <= 1:  # guidance off: the negative would be unused
        raise errors.InvalidParameterValue(
            f"NegativePrompt needs guidance: model {entry.label} runs at guidance_scale {guidance:g}, where a negative "
            "prompt does nothing; add AdditionalParameters guidance_scale above 1 (e.g. 4)."
        )
    if additional.guidance_scale is not None and not entry.guidance:
        raise errors.ModelNotSupported(
            f"Model {entry.label} is guidance-distilled: it takes no AdditionalParameters guidance_scale."
        )
    check_sampler_and_adapters(entry, additional.sampler, additional.loras or {})
    if additional.steps is not None and additional.steps > entry.max_steps:
        raise errors.InvalidParameterValue(
            f"AdditionalParameters steps must be at most {entry.max_steps} for model {entry.label}; "
            f"got {additional.steps}."
        )
    bucket, region, path = user_bucket(values.get("StoreCosParam", {}), limits.accepts_user_buckets)

    spec = TaskSpec(
        model_name=entry.name,
        model_version=entry.version,
        prompt=prompt,
        negative_prompt=negative_prompt,
        image_count=count,
        output_format=output_format,
        width=generated[0],
        height=generated[1],
        steps=additional.steps or entry.steps,
        guidance_scale=guidance,
        operator=operator,
        seed=additional.seed if additional.seed is not None else secrets.randbelow(MAX_SEED + 1),
        delivered=delivered if delivered != generated else None,
        logo=logo == 1,
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        cos_bucket=bucket,
        cos_region=region,
        cos_path=path,
        reference_urls=references,
        strength=additional.strength,
        scene_type=scene_type,
        sampler=additional.sampler or "",
        loras=tuple(sorted((additional.loras or {}).items())),
    )
    return spec, entry


def check_sampler_and_adapters(entry: ModelEntry, sampler: str | None, loras: dict[str, float]) -> None:
    """A sampler and LoRA adapters the model offers (its catalogue entry's ``samplers`` and ``adapters``)."""
    if sampler is not None and sampler not in entry.samplers:
        offered = f"choose one of {', '.join(entry.samplers)}" if entry.samplers else "it runs its own scheduler only"
        raise errors.InvalidParameterValue(
            f"AdditionalParameters sampler {sampler!r} is not offered by model {entry.label}; {offered}."
        )
    if unlisted := sorted(set(loras) - set(entry.adapters)):
        offered = f"its adapters: {', '.join(entry.adapters)}" if entry.adapters else "it has no LoRA adapters"
        raise errors.InvalidParameterValue(
            f"AdditionalParameters loras names {', '.join(map(repr, unlisted))}, not offered by model {entry.label}; "
            f"{offered}."
        )


def user_bucket(cos: dict[str, str], accepts_user_buckets: bool) -> tuple[str, str, str]:
    """StoreCosParam checked: (bucket, region, path), or empty strings when not given."""
    if not any(cos.values()):
        return "", "", ""
    if not accepts_user_buckets:
        raise errors.UnsupportedOperation(
            "StoreCosParam is not enabled on this server: its operator has not configured "
            "storage.cos_secret_id and storage.cos_secret_key (docs/configuration.md)."
        )
    bucket, region = cos.get("CosBucketName", ""), cos.get("CosBucketRegion", "")
    path = cos.get("CosBucketPath", "").strip("/")
    for name, value in (("CosBucketName", bucket), ("CosBucketRegion", region)):
        if not value:
            raise errors.MissingParameter(f"StoreCosParam.{name} is required to store results in a bucket.")
    if not _BUCKET.fullmatch(bucket):
        raise errors.InvalidParameterValue(
            f"StoreCosParam.CosBucketName {bucket!r} is not a bucket name (3–63 lowercase letters, digits, "
            "dots and hyphens, e.g. aigc-results-1250000000)."
        )
    if not _REGION.fullmatch(region):
        raise errors.InvalidParameterValue(f"StoreCosParam.CosBucketRegion {region!r} is not a region name.")
    if len(path) > 512 or not _PATH.fullmatch(path) or any(p in ("", ".", "..") for p in path.split("/") if path):
        raise errors.InvalidParameterValue(
            "StoreCosParam.CosBucketPath must be a relative path of letters, digits and -_.!*'() "
            "separated by /, at most 512 characters, without . or .. segments."
        )
    return bucket, region, path


def uploaded_references(references: tuple[str, ...], entry: ModelEntry) -> tuple[str, ...]:
    if entry.max_reference_images == 0:
        raise errors.ModelNotSupported(f"Model {entry.label} does not take reference images.")
    if len(references) > entry.max_reference_images:
        raise errors.InvalidParameterValue(
            f"Model {entry.label} takes at most {entry.max_reference_images} reference image(s); got {len(references)}."
        )
    return references


def reference_urls(infos: list[dict[str, str]], entry: ModelEntry, allow: tuple[Network, ...]) -> tuple[str, ...]:
    """ImageInfos checked as far as they can be before fetching: count, scheme, literal addresses.

    Host names are resolved and checked by the worker's fetcher, at the time it connects.
    """
    if not infos:
        return ()
    if entry.max_reference_images == 0:
        raise errors.ModelNotSupported(f"Model {entry.label} does not take reference images (ImageInfos).")
    if len(infos) > entry.max_reference_images:
        raise errors.InvalidParameterValue(
            f"Model {entry.label} takes at most {entry.max_reference_images} reference image(s); got {len(infos)}."
        )
    urls = []
    for index, info in enumerate(infos):
        name = f"ImageInfos.{index}"
        if info.get("ReferenceType"):
            raise errors.UnsupportedOperation(f"{name}.ReferenceType is not supported by this server yet.")
        url = info.get("ImageUrl", "")
        if not url:
            raise errors.MissingParameter(f"{name}.ImageUrl is required.")
        if len(url) > MAX_URL_CHARS:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl is longer than {MAX_URL_CHARS} characters.")
        if any(char.isspace() or not char.isprintable() for char in url):
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must not contain spaces or control characters.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must be an http or https URL with a host.")
        if parts.username is not None or parts.password is not None:
            raise errors.InvalidParameterValue(f"{name}.ImageUrl must not contain credentials.")
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None and not is_allowed(literal, allow):
            raise errors.InvalidParameterValue(
                f"{name}.ImageUrl points at {literal}, which is not a public internet address."
            )
        urls.append(url)
    return tuple(urls)
