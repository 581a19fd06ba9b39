from __future__ import annotations

import json

from aigc_image.tasks import TaskSpec, is_task_id, new_task_id


def test_task_ids_have_the_documented_form_and_are_unique() -> None:
    ids = [new_task_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for task_id in ids:
        assert is_task_id(task_id), task_id
        suffix = task_id.removeprefix("4-AigcImage-")
        assert len(suffix) == 32 and suffix == suffix.lower()


def test_task_ids_are_time_ordered_across_milliseconds() -> None:
    first = new_task_id()
    later = [new_task_id() for _ in range(2000)]  # spans at least one millisecond boundary
    assert all(task_id[:24] >= first[:24] for task_id in later)


def test_is_task_id_refuses_other_shapes() -> None:
    for value in ["", "4-AigcImage-", "4-AigcVideo-" + "0" * 32, "4-AigcImage-" + "G" * 32, "4-AigcImage-" + "0" * 33]:
        assert not is_task_id(value)


def test_spec_round_trips_through_json() -> None:
    spec = TaskSpec("tiny-random", "1", '猫 "quoted"', "", 2, "jpeg", 64, 64, 10, None, "ops")
    assert TaskSpec.from_json(spec.to_json()) == spec


def test_a_spec_with_a_sampler_and_adapters_round_trips_and_one_stored_before_them_loads() -> None:
    spec = TaskSpec("SD-Turbo", "1.0", "a cat", "", 1, "png", 64, 64, 4, 0.0, sampler="DDIM", loras=(("ink", 0.8),))
    assert TaskSpec.from_json(spec.to_json()) == spec
    stored_before = json.loads(spec.to_json())
    del stored_before["sampler"], stored_before["loras"]
    old = TaskSpec.from_json(json.dumps(stored_before))
    assert (old.sampler, old.loras) == ("", ())
