"""The default model as a property of the deployment, kept in the task store: the model a request
that names no ``ModelName`` gets, the same from every API process and worker over one database.

* A configured default wins: ``models.default_model`` (or the registry file's ``default_model``)
  is recorded at start, over a default that was chosen for hardware. Two processes configured with
  different ones cannot both be obeyed, so the one that starts second refuses to start and says
  why; ``aigc-image models --set-default`` changes the deployment's default on purpose.
* With none configured, the first worker to start (or ``serve``, for the workers it runs on its
  own host) records the best model for its hardware, and later processes keep it. API processes
  never choose: they often run on hosts without GPUs, whose hardware says nothing of the workers'.
* A recorded default that a process's model catalogue lacks stops that process at start too.
* API processes re-read the record every ``REFRESH_SECONDS`` (``DefaultModel``), so a change, or
  the first worker's choice, reaches all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aigc_image.catalog import Catalog, ModelEntry
from aigc_image.clock import Clock
from aigc_image.config import ConfigError
from aigc_image.hardware import Hardware, default_for, fits, probe
from aigc_image.store.base import DefaultModelRecord, StoreUnavailable, TaskStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
SET_DEFAULT = "aigc-image models --set-default"


def agree_on_default(
    store: TaskStore,
    catalog: Catalog,
    origin: str,
    who: str,
    now: float,
    choose: Callable[[], tuple[ModelEntry, str]] | None = None,
) -> DefaultModelRecord | None:
    """The deployment's default model, agreed with the store as a process starts.

    ``catalog``: this process's catalogue, whose ``default_label`` is the configured default (""
    for none) and ``origin`` the setting that named it; ``who`` names this process; ``choose``
    gives the best model for the hardware of the workers this process runs (None for an API alone).
    Raises ConfigError when this process cannot agree with what is recorded.
    """
    if catalog.default_label:
        mine = DefaultModelRecord(catalog.default_label, True, origin, who, now)
        recorded = store.record_default_model(mine, replace="chosen")
        if recorded.label != mine.label:
            raise ConfigError(
                f"{origin} is {mine.label} here, but this deployment's default model is {recorded.label} "
                f"({describe(recorded)}). Every API process and worker over one database must agree: set the "
                f"same default everywhere, or change the deployment's first with `{SET_DEFAULT} {mine.label}`."
            )
        return recorded
    found = store.default_model()
    if found is None and choose is not None:
        entry, why = choose()
        found = store.record_default_model(DefaultModelRecord(entry.label, False, why, who, now), replace="none")
    if found is not None:
        catalog_with(catalog, found)
    return found


def worker_agrees(store: TaskStore, catalog: Catalog, origin: str, torch_device: str, who: str, now: float) -> None:
    """A worker agrees with the deployment on its default model at start; with none recorded or
    configured, this worker, the first, chooses the best model for its own device. A default that
    does not fit this worker's device is logged (it runs offloaded here, or not at all)."""
    hardware: list[Hardware] = []

    def choose() -> tuple[ModelEntry, str]:
        hardware.append(probe((torch_device,)))
        return default_for(catalog, hardware[0])

    recorded = agree_on_default(store, catalog, origin, who, now, choose)
    if recorded is None:
        return
    log.info("the deployment's default model: %s, %s", recorded.label, describe(recorded))
    entry = catalog.with_default(recorded.label).default
    if entry.engine == "tiny-random":
        return
    here = hardware[0] if hardware else probe((torch_device,))
    if not fits(entry, here):
        log.warning("the deployment's default model %s does not fit this worker (%s): it will run offloaded or "
                    "not at all here", entry.label, here.describe())  # fmt: skip


def set_default(store: TaskStore, catalog: Catalog, label: str, who: str, now: float) -> DefaultModelRecord:
    """Make ``label`` the deployment's default model, over whatever is recorded (``--set-default``)."""
    entry = catalog.with_default(label).default
    return store.record_default_model(DefaultModelRecord(entry.label, True, SET_DEFAULT, who, now), replace="any")


def catalog_with(catalog: Catalog, record: DefaultModelRecord) -> Catalog:
    """``catalog`` with the recorded default; ConfigError if this catalogue lacks that model."""
    try:
        return catalog.with_default(record.label)
    except ConfigError:
        raise ConfigError(
            f"this deployment's default model is {record.label} ({describe(record)}), but this process's model "
            f"catalogue has no such model: give every process the same models.registry_file, or change the "
            f"deployment's default with `{SET_DEFAULT}`."
        ) from None


def describe(record: DefaultModelRecord) -> str:
    """Who recorded the default, when and why, for messages and ``aigc-image models``."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.set_at))
    if record.explicit:
        return f"set by {record.origin} of {record.set_by}, {when}"
    return f"chosen by {record.set_by}, {when}: {record.origin}"


class DefaultModel:
    """An API process's view of the deployment's default: its catalogue with the recorded default,
    re-read from the store every ``REFRESH_SECONDS``. Before anything is recorded, the catalogue's
    own configured default (or none: a request must then name its model)."""

    def __init__(self, store: TaskStore, catalog: Catalog, clock: Clock) -> None:
        self._store = store
        self._configured = catalog
        self._catalog = catalog
        self._clock = clock
        self._next_read = clock.monotonic()  # at the first request
        self._refused = ""  # a recorded label already logged as missing from this catalogue

    async def catalog(self) -> Catalog:
        if self._clock.monotonic() >= self._next_read:
            self._next_read = self._clock.monotonic() + REFRESH_SECONDS
            try:
                record = await asyncio.to_thread(self._store.default_model)
            except StoreUnavailable as exc:
                log.warning("cannot read the deployment's default model (%s); keeping %s", exc, self.label or "none")
                return self._catalog
            self._follow(record)
        return self._catalog

    @property
    def label(self) -> str:
        return self._catalog.default_label

    def _follow(self, record: DefaultModelRecord | None) -> None:
        if record is None or record.label == self._catalog.default_label:
            return
        try:
            catalog = catalog_with(self._configured, record)
        except ConfigError as exc:
            if record.label != self._refused:
                self._refused = record.label
                log.error("%s Keeping %s meanwhile.", exc, self.label or "no default")
            return
        if self._catalog.default_label:
            log.warning("the deployment's default model is now %s (%s)", record.label, describe(record))
        self._catalog = catalog
