"""MatchedTask.without_updates: the task as it was handed, less its commit's update requests."""

from __future__ import annotations

import dataclasses

from services.common.matching.tasks import WORKFLOW, MatchedTask


def test_a_task_without_updates_keeps_every_other_field() -> None:
    # Every field set to a value of its own, so that a field the copy forgot shows.
    task = MatchedTask(WORKFLOW, "t1", {"run_id": "r1"}, payload=b"\xc3\x01record", traceparent="00-abc-def-01",
                       events=[{"event_id": 1}], updates=[{"update_id": "u1"}])
    assert all(getattr(task, f.name) is not None for f in dataclasses.fields(task))
    got = task.without_updates()
    assert got.updates is None
    for f in dataclasses.fields(task):
        if f.name != "updates":
            assert getattr(got, f.name) is getattr(task, f.name), f.name
    assert task.updates == [{"update_id": "u1"}]  # the one handed is left as it was


def test_a_task_with_no_updates_is_itself() -> None:
    task = MatchedTask(WORKFLOW, "t2", {"run_id": "r2"})
    assert task.without_updates() is task
