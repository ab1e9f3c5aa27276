"""What matching here tells history's re-dispatch it holds (services/matching/service.py holds)."""

from __future__ import annotations

from services.common.colocation import LocalMatching, OutboxTasks, TracedTasks
from services.common.config import Settings
from services.history.builder import LocalTask
from services.matching.service import MatchingService


def _activity(task_id: str) -> LocalTask:
    return LocalTask("ActivityTask", {"namespace": "ns", "task_queue": "q", "task_id": task_id})


async def test_a_task_waiting_in_memory_is_held_and_one_handed_to_a_poll_is_not() -> None:
    matching = MatchingService(Settings(database_url="postgresql://nowhere/none"))
    matching._owned.add(matching.partition_of("ns", "q"))  # as assign() would, without a backlog store
    sink = TracedTasks(LocalMatching(matching))
    sink.hand_over([_activity("run:act:5:1"), _activity("run:act:6:1")])
    assert sink.holds("run:act:5:1") and sink.holds("run:act:6:1")
    assert not sink.holds("run:act:7:1")  # never handed over
    [taken] = await matching.poll("ns", "q", "activity", max_tasks=1, wait_seconds=0)
    # Delivered, its poller may vanish before the started record: re-dispatch may send it again.
    assert not sink.holds(taken.task_id)
    assert sink.holds({"run:act:5:1", "run:act:6:1"}.difference({taken.task_id}).pop())
    await matching.poll("ns", "q", "activity", max_tasks=1, wait_seconds=0)
    assert not sink.holds("run:act:5:1") and not sink.holds("run:act:6:1")


def test_over_the_broker_nothing_is_held() -> None:
    assert not OutboxTasks().holds("run:act:5:1")
