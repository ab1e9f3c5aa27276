"""The read-only task-queue snapshot the web UI shows: waiting polls and waiting tasks."""

from __future__ import annotations

from services.common.matching.stats import QueueStats
from services.common.matching.tasks import MatchedTask
from services.matching.queues import QueueKey, TaskQueue
from services.matching.stats import snapshot


async def test_the_snapshot_counts_live_polls_and_waiting_tasks_per_queue() -> None:
    orders = TaskQueue(QueueKey("shop", "orders", "activity"), partition=1, backlog=3)
    gone = orders.add_poller(1)
    orders.add_poller(1)
    gone.future.set_result([])  # answered: no longer waiting
    orders.ready.append(MatchedTask("activity", "t1", {}))
    other = TaskQueue(QueueKey("bank", "cards", "workflow"), partition=0)
    assert snapshot([orders, other], "shop") == [QueueStats("shop", "orders", "activity", 1, 1, 1, 3)]
    assert [s.namespace for s in snapshot([orders, other])] == ["bank", "shop"]
