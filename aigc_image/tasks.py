"""Domain types of an image task; no I/O."""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from aigc_image.errors import Reason

TASK_ID_PREFIX = "4-AigcImage-"
PANORAMA = "3d_panorama"  # the one SceneType
# ExtraParameters.AspectRatio and Resolution, as the MPS API names them (media/sizes.py has their sizes).
AspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9"]
Resolution = Literal["720P", "1K", "1080P", "2K", "4K"]


class Status(enum.StrEnum):
    WAIT = "WAIT"
    RUN = "RUN"
    DONE = "DONE"
    FAIL = "FAIL"


def new_task_id() -> str:
    """``4-AigcImage-`` + 32 hex digits: a millisecond timestamp (12) then 80 random bits (20).

    Time-ordered, like UUIDv7, so new ids append to the store's primary-key index instead of
    landing on random pages: inserts dirty fewer pages and commit faster.
    """
    return f"{TASK_ID_PREFIX}{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def is_task_id(value: str) -> bool:
    suffix = value.removeprefix(TASK_ID_PREFIX)
    return value.startswith(TASK_ID_PREFIX) and len(suffix) == 32 and all(c in "0123456789abcdef" for c in suffix)


@dataclass(frozen=True)
class TaskSpec:
    """What to generate, fully resolved: every default already applied."""

    model_name: str
    model_version: str
    prompt: str
    negative_prompt: str
    image_count: int
    output_format: str  # "png" or "jpeg"
    width: int
    height: int
    steps: int
    guidance_scale: float | None  # None: the pipeline's own default
    operator: str = ""
    seed: int | None = None  # recorded at create; None only in tasks stored before seeds were
    delivered: tuple[int, int] | None = None  # (width, height) delivered when not the generated size
    logo: bool = False  # ExtraParameters.LogoAdd: the visible AI-generated mark
    aspect_ratio: str = ""  # as requested, for task listings
    resolution: str = ""
    cos_bucket: str = ""  # StoreCosParam: images go to this bucket of the user's
    cos_region: str = ""
    cos_path: str = ""
    reference_urls: tuple[str, ...] = ()  # ImageInfos: fetched by the worker
    strength: float | None = None  # image-to-image: how far from the reference (None: the model's default)
    enhanced_prompt: str = ""  # EnhancePrompt: the prompt actually used, when it differs from ``prompt``
    scene_type: str = ""  # "3d_panorama": a 2:1 image whose left and right edges join
    sampler: str = ""  # AdditionalParameters sampler ("": the model's own scheduler)
    loras: tuple[tuple[str, float], ...] = ()  # AdditionalParameters loras: (adapter, scale), sorted by name

    @property
    def delivered_size(self) -> tuple[int, int]:
        """The size of the images the client gets: the generated one unless it asked for another."""
        return self.delivered or (self.width, self.height)

    @property
    def batch_key(self) -> str:
        """Tasks with equal keys can share one pipeline call: the same model, generated size, steps,
        guidance, sampler, LoRA adapter scales and kind (text-to-image, image-to-image with as many
        references at one strength, panorama), and both with or both without a negative prompt (some
        pipelines treat none and an empty one differently). Prompts, seeds, image counts and
        everything done after generating (format, size delivered, labels, storage) may differ."""
        kind = f"refs={len(self.reference_urls)}@{self.strength}" if self.reference_urls else "t2i"
        loras = ",".join(f"{name}={scale:g}" for name, scale in self.loras)
        return (
            f"{self.model_name}:{self.model_version}|{self.width}x{self.height}|steps={self.steps}"
            f"|guidance={self.guidance_scale}|negative={bool(self.negative_prompt)}|{kind}|{self.scene_type}"
            f"|sampler={self.sampler}|loras={loras}"
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)  # not asdict(): it deep-copies, slowly

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        values = json.loads(text)
        values["reference_urls"] = tuple(values.get("reference_urls", ()))
        values["loras"] = tuple((name, scale) for name, scale in values.get("loras", ()))  # JSON made them lists
        width, height = values.pop("output_width", 0), values.pop("output_height", 0)  # stored before 0.2
        delivered = values.get("delivered") or ((width, height) if width else None)
        values["delivered"] = tuple(delivered) if delivered else None
        return cls(**values)


def has_references(batch_key: str) -> bool:
    """Whether the tasks of ``batch_key`` take reference images (``TaskSpec.batch_key``'s kind), which a
    worker fetches before they hold its device. The parts before the kind come from the catalogue
    and checked numbers, never from free text."""
    return "|refs=" in batch_key


@dataclass(frozen=True)
class NewTask:
    """A task about to be stored, with the fingerprint of the request that asked for it.

    A request whose fingerprint a stored task already has is the same request again (a replay, a
    client's retry): it gets that task instead of a new one. ``fingerprint_window``: for how many
    seconds after its creation a task can be joined this way (0: as long as it is kept, as for
    signed MPS requests). ``joins_earlier`` False: the client says this request is new, not a retry
    (it is still stored under its fingerprint, for its own retries to find).
    """

    task_id: str
    secret_id: str
    spec: TaskSpec
    request_fingerprint: str | None = None
    fingerprint_window: float = 0.0
    joins_earlier: bool = True
    weight: float = 1.0  # the key's weight (keys.toml): its share under contention, recorded with the key


@dataclass(frozen=True)
class Task:
    task_id: str
    secret_id: str
    spec: TaskSpec
    status: Status
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    message: str = ""
    reason: Reason | None = None  # why it ended FAIL (None in any other state)
    result_keys: tuple[str, ...] = ()
    results_purged: bool = False
    step: int = 0  # progress of the current attempt: denoising steps done of ``steps``
    steps: int = 0
    queued_at: float = 0.0  # its place in the queue: created_at, or the retry time after a failed fetch
    fetch_seconds: float = 0.0  # spent fetching its reference images, over its earlier attempts


@dataclass(frozen=True)
class Claim:
    """A task leased to one worker; only the holder of ``token`` may finish it."""

    task: Task
    token: str
    # Its last attempt never ended: its worker died or stalled, maybe because of this very task.
    # It runs alone, with nothing else in its worker, so that it cannot take other tasks down.
    alone: bool = False
    weight: float = 1.0  # its key's weight when it was claimed (the metrics' weight class)
