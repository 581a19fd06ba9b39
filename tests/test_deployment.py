"""The default model is the deployment's, not one process's (deployment.py), on SQLite and
PostgreSQL: processes are simulated here by their start-up agreement over one store; the live
processes are in test_default_model_processes.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aigc_image.catalog import Catalog, ModelEntry, load_catalog
from aigc_image.clock import ManualClock
from aigc_image.config import ConfigError
from aigc_image.deployment import REFRESH_SECONDS, DefaultModel, agree_on_default, set_default
from aigc_image.store import DefaultModelRecord, TaskStore
from tests.stores import Backend

NOW = 1_800_000_000.0


def catalog(default: str = "") -> Catalog:
    return load_catalog(default_model=default)


def chooser(label: str) -> tuple[ModelEntry, str]:
    name, _, version = label.partition(":")
    return catalog().resolve(name, version or None), "the best built-in model that fits this host (test)"


def test_nothing_is_recorded_until_a_process_configures_or_chooses_one(store: TaskStore) -> None:
    assert agree_on_default(store, catalog(), "none configured", "api a", NOW) is None  # an API alone never chooses
    assert store.default_model() is None


def test_a_configured_default_is_recorded_and_a_second_process_agrees(store: TaskStore) -> None:
    first = agree_on_default(store, catalog("tiny-random"), "models.default_model", "api a", NOW)
    assert first == DefaultModelRecord("tiny-random:1", True, "models.default_model", "api a", NOW)
    again = agree_on_default(store, catalog("tiny-random:1"), "models.default_model", "api b", NOW + 5)
    assert again == first  # the first record stands
    follower = agree_on_default(store, catalog(), "none configured", "api c", NOW + 9)
    assert follower == first  # a process with none configured uses the deployment's


def test_two_configured_defaults_that_disagree_stop_the_second_at_start(store: TaskStore) -> None:
    agree_on_default(store, catalog("tiny-random"), "models.default_model", "serve on host-a", NOW)
    with pytest.raises(ConfigError) as refused:
        agree_on_default(store, catalog("SD-Turbo"), "models.default_model", "serve on host-b", NOW)
    message = str(refused.value)
    assert "models.default_model is SD-Turbo:1.0 here" in message
    assert "default model is tiny-random:1 (set by models.default_model of serve on host-a" in message
    assert "aigc-image models --set-default SD-Turbo:1.0" in message
    assert store.default_model().label == "tiny-random:1"  # type: ignore[union-attr]


def test_the_first_worker_chooses_for_its_hardware_and_a_configured_default_wins_over_it(store: TaskStore) -> None:
    chosen = agree_on_default(
        store, catalog(), "none configured", "worker gpu-1:7", NOW, lambda: chooser("Hunyuan:3.0")
    )
    assert chosen is not None and chosen.label == "Hunyuan:3.0" and not chosen.explicit
    second = agree_on_default(store, catalog(), "none configured", "worker cpu-2:9", NOW, lambda: chooser("SD-Turbo"))
    assert second == chosen  # later workers keep the first choice, whatever their own hardware

    configured = agree_on_default(store, catalog("tiny-random"), "models.default_model", "api a", NOW + 1)
    assert configured is not None and configured.label == "tiny-random:1" and configured.explicit
    later_worker = agree_on_default(store, catalog(), "none configured", "worker gpu-3:1", NOW, lambda: chooser("Qwen"))
    assert later_worker == configured


def test_a_recorded_default_missing_from_this_catalogue_stops_the_process(store: TaskStore) -> None:
    store.record_default_model(DefaultModelRecord("Custom:1", True, "models.default_model", "api a", NOW), "any")
    with pytest.raises(ConfigError, match=r"default model is Custom:1 .*no such model.*models.registry_file"):
        agree_on_default(store, catalog(), "none configured", "worker w:1", NOW)


def test_set_default_changes_it_for_everyone_and_then_their_settings_must_follow(store: TaskStore) -> None:
    agree_on_default(store, catalog("tiny-random"), "models.default_model", "api a", NOW)
    record = set_default(store, catalog(), "SD-Turbo", "ops on laptop", NOW + 60)
    assert record.label == "SD-Turbo:1.0" and record.origin == "aigc-image models --set-default"
    with pytest.raises(ConfigError, match="tiny-random:1 here"):
        agree_on_default(store, catalog("tiny-random"), "models.default_model", "api b", NOW + 61)
    assert agree_on_default(store, catalog("SD-Turbo"), "models.default_model", "api b", NOW + 62) == record
    with pytest.raises(ConfigError, match="not in the model catalogue"):
        set_default(store, catalog(), "Kling", "ops", NOW)


def test_processes_that_start_together_and_disagree_record_exactly_one(backend: Backend, clock: ManualClock) -> None:
    stores = [backend.open(clock) for _ in range(6)]
    labels = ["tiny-random:1", "SD-Turbo:1.0"] * 3
    outcomes: list[str] = []
    start = threading.Barrier(len(stores))

    def start_process(store: TaskStore, label: str) -> None:
        start.wait()
        try:
            outcomes.append(agree_on_default(store, catalog(label), "models.default_model", label, NOW).label)  # type: ignore[union-attr]
        except ConfigError:
            outcomes.append("refused")

    threads = [threading.Thread(target=start_process, args=pair) for pair in zip(stores, labels, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = stores[0].default_model()
    assert recorded is not None
    assert sorted(outcomes) == sorted([recorded.label] * 3 + ["refused"] * 3)
    for store in stores:
        store.close()


def test_an_api_process_follows_the_record_as_it_changes(store: TaskStore, clock: ManualClock) -> None:
    view = DefaultModel(store, catalog(), clock)
    assert asyncio.run(view.catalog()).default_label == ""  # nothing recorded, nothing configured
    agree_on_default(store, catalog(), "none configured", "worker w:1", NOW, lambda: chooser("SD-Turbo"))
    assert asyncio.run(view.catalog()).default_label == ""  # read again only every REFRESH_SECONDS
    clock.advance(REFRESH_SECONDS)
    assert asyncio.run(view.catalog()).default_label == "SD-Turbo:1.0"
    set_default(store, catalog(), "tiny-random", "ops", NOW)
    clock.advance(REFRESH_SECONDS)
    assert asyncio.run(view.catalog()).default.label == "tiny-random:1"


def test_an_api_process_keeps_its_default_when_the_record_names_a_model_it_lacks(
    store: TaskStore, clock: ManualClock
) -> None:
    view = DefaultModel(store, catalog("tiny-random"), clock)
    store.record_default_model(DefaultModelRecord("Custom:1", True, "aigc-image models --set-default", "x", NOW), "any")
    assert asyncio.run(view.catalog()).default_label == "tiny-random:1"
