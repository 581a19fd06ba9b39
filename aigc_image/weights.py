"""Model weights on this host: whether a catalogue entry's are here, and fetching them.

``aigc-image models`` reads ``status``; ``aigc-image pull`` calls ``pull``, which downloads with
diffusers' ``DiffusionPipeline.download`` (only the files the pipeline loads, in the entry's
variant) through huggingface_hub, whose progress bars show each file and which resumes an
interrupted download where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aigc_image.catalog import ModelEntry

# What a single-file checkpoint's source_config is read for: configs, tokenizers, chat templates.
CONFIG_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class WeightsStatus:
    where: str  # "built in", "local folder", "Hugging Face cache"
    present: bool
    size_bytes: int  # on disk, when present


def sources(entry: ModelEntry) -> list[str]:
    """Every weights source the entry loads: its own (or its configs', for a checkpoint file), its
    single-file denoiser, and its editing pipeline's."""
    if entry.engine == "tiny-random":
        return []
    return [s for s in (entry.source, entry.source_config, entry.denoiser_file, entry.image_source) if s]


def status(entry: ModelEntry) -> WeightsStatus:
    if entry.engine == "tiny-random":
        return WeightsStatus("built in", True, 0)
    names = sources(entry)
    if all(is_local(s) for s in names):
        present = all(_present(Path(s).expanduser()) for s in names)
        size = sum(_folder_size(Path(s).expanduser()) for s in names) if present else 0
        return WeightsStatus("local folder", present, size)
    cached = _cached_repos()
    present = all(s in cached for s in names if not is_local(s))
    return WeightsStatus("Hugging Face cache", present, sum(cached.get(s, 0) for s in names))


def pull(entry: ModelEntry) -> list[str]:
    """Download the entry's weights into the Hugging Face cache; returns the repos fetched."""
    from diffusers import DiffusionPipeline

    fetched = []
    for source in sources(entry):
        if is_local(source) or "://" in source:  # files are the operator's to place (docs/models.md)
            continue
        if source == entry.source_config:  # a checkpoint's configs and tokenizers, not its weights
            from huggingface_hub import snapshot_download

            snapshot_download(source, allow_patterns=CONFIG_FILES)
            fetched.append(source)
            continue
        try:
            DiffusionPipeline.download(source, variant=entry.variant or None)
        except ValueError as exc:
            if not entry.variant or "variant" not in str(exc):
                raise
            DiffusionPipeline.download(source)
        fetched.append(source)
    return fetched


def download_failure(exc: BaseException) -> str:
    """Why a download failed, on one line, with what to do: the root cause (no network, offline
    mode, a gated or missing repository), not diffusers' "see the stacktrace above"."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(cause)
    hub = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set, so nothing is downloaded; unset it where the Hub is reachable."
    if any(isinstance(error, GatedRepoError) for error in chain):
        return "the repository is gated: accept its licence on its Hub page, then log in (`hf auth login` or HF_TOKEN)."
    if any(isinstance(error, RepositoryNotFoundError) for error in chain):
        return f"no such repository on {hub} (or it is private: log in with `hf auth login` or HF_TOKEN)."
    root = chain[-1]
    reason = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    if "Connect" in type(root).__name__ or "Timeout" in type(root).__name__ or isinstance(root, OSError):
        return (f"cannot reach the Hugging Face Hub ({hub}): {reason.rstrip('.')}. Check the network or proxy "
                "(HTTPS_PROXY), or pull on a host that reaches it and copy its cache (docs/models.md).")  # fmt: skip
    return f"{reason.rstrip('.')}."


def is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).is_dir()


def _cached_repos() -> dict[str, int]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return {}
    return {repo.repo_id: repo.size_on_disk for repo in info.repos if repo.repo_type == "model"}


def _present(path: Path) -> bool:
    """A checkpoint file, or a diffusers folder (its model_index.json)."""
    return path.is_file() or (path / "model_index.json").is_file()


def _folder_size(folder: Path) -> int:
    if folder.is_file():
        return folder.stat().st_size
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
