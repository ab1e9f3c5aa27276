"""In-memory task queues of matching: fair hand-over and the duplicate window; no I/O."""

from __future__ import annotations

import time

import pytest

from services.common.matching.tasks import WORKFLOW, MatchedTask
from services.matching.queues import QueueKey, RecentTasks, TaskQueue

pytestmark = pytest.mark.timeout(60)


def _task(task_id: str) -> MatchedTask:
    return MatchedTask(WORKFLOW, task_id, {"task_id": task_id})


async def test_hand_over_is_fifo_across_pollers_and_skips_abandoned_ones() -> None:
    q = TaskQueue(QueueKey("default", "q", WORKFLOW), 0)
    first, gone, second = q.add_poller(1), q.add_poller(1), q.add_poller(1)
    gone.future.cancel()
    assert q.offer(_task("a")) and q.offer(_task("b"))
    assert [t.task_id for t in first.future.result()] == ["a"]
    assert [t.task_id for t in second.future.result()] == ["b"]
    assert not q.offer(_task("c"))  # nobody waits: the caller stores it


async def test_a_batch_of_tasks_fills_each_waiting_poll_up_to_what_it_asked_for() -> None:
    q = TaskQueue(QueueKey("default", "q", WORKFLOW), 0)
    small, big = q.add_poller(2), q.add_poller(10)
    assert q.offer_many([_task(str(i)) for i in range(5)]) == 5
    assert [t.task_id for t in small.future.result()] == ["0", "1"]
    assert [t.task_id for t in big.future.result()] == ["2", "3", "4"]
    third = q.add_poller(1)
    assert q.offer_many([_task("5"), _task("6")]) == 1  # the rest is the caller's to keep
    assert [t.task_id for t in third.future.result()] == ["5"]


async def test_wake_tells_pollers_to_look_again() -> None:
    q = TaskQueue(QueueKey("default", "q", WORKFLOW), 0)
    p = q.add_poller(1)
    q.wake(3)
    assert p.future.result() == [] and not q.has_pollers()


def test_recent_tasks_forget_after_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = RecentTasks(window_seconds=5.0)
    recent.add("t1")
    assert "t1" in recent
    now[0] += 6.0  # history's re-dispatch of an unstarted task comes later than this
    assert "t1" not in recent
    recent.add("t2")
    assert "t1" not in recent and "t2" in recent


def test_matched_task_json_round_trip() -> None:
    t = MatchedTask("activity", "id", {"x": 1}, b"payload")
    back = MatchedTask.from_json(t.to_json())
    assert (back.kind, back.task_id, back.task, back.payload) == ("activity", "id", {"x": 1}, None)
