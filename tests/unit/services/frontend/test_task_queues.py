"""Describing a task queue: the pollers matching remembers, the kinds the API answers, and
how ``kadence task-queue describe`` prints them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kadence._cli.task_queue import print_description
from services.common.matching.stats import PollerSeen, QueueStats
from services.common.matching.tasks import KINDS
from services.frontend.task_queues import Backlog, TaskKind, describe_kinds
from services.matching.pollers import UNNAMED, RecentPollers
from services.matching.queues import QueueKey, TaskQueue
from services.matching.stats import snapshot


def test_recent_pollers_most_recent_first_forgotten_after_the_ttl_and_bounded() -> None:
    now = [1_000_000]
    seen = RecentPollers(ttl_ms=60_000, limit=3, clock=lambda: now[0])
    seen.saw("worker-a")
    now[0] += 1000
    seen.saw("worker-b")
    now[0] += 1000
    seen.saw("worker-a")  # polls again: moves to the front
    seen.saw("")
    assert seen.recent() == (PollerSeen(UNNAMED, 1_002_000), PollerSeen("worker-a", 1_002_000),
                             PollerSeen("worker-b", 1_001_000))
    seen.saw("worker-c")  # beyond the limit: the least recent goes
    assert [p.identity for p in seen.recent()] == ["worker-c", UNNAMED, "worker-a"]
    now[0] += 60_001
    assert seen.recent() == () and seen.last_poll_ms is None


async def test_the_snapshot_carries_the_pollers_and_crosses_the_internal_api_as_json() -> None:
    q = TaskQueue(QueueKey("shop", "orders", "workflow"), partition=1, backlog=2)
    q.seen.saw("w1")
    [stats] = snapshot([q])
    assert [p.identity for p in stats.recent_pollers] == ["w1"] and stats.last_poll_ms is not None
    assert QueueStats.from_json(stats.to_json()) == stats


def test_both_kinds_are_described_whatever_matching_knows() -> None:
    stats = [QueueStats("shop", "orders", "activity", 0, 2, 1, 0, (PollerSeen("w1", 5_000),))]
    backlog = {"workflow": Backlog(3, 1_000)}
    workflow, activity = describe_kinds(stats, backlog)
    assert workflow.kind is TaskKind.WORKFLOW and workflow.polls_waiting == 0 and workflow.tasks_waiting == 3
    assert workflow.pollers == () and workflow.to_json()["oldest_backlog_time"] == "1970-01-01T00:00:01Z"
    assert activity.polls_waiting == 2 and activity.ready == 1 and activity.last_poll_ms == 5_000
    assert activity.to_json()["pollers"] == [{"identity": "w1", "last_poll_time": "1970-01-01T00:00:05Z"}]
    assert tuple(k.value for k in TaskKind) == KINDS  # every kind matching keeps queues for
    unknown = describe_kinds(None, {})
    assert [k.polls_waiting for k in unknown] == [None, None]


def test_the_table_names_the_pollers_and_says_when_nobody_polls(capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime(2026, 12, 6, 12, 0, 10, tzinfo=UTC)
    print_description({"namespace": "shop", "task_queue": "orders", "pollers_known": True, "kinds": [
        {"kind": "workflow", "pollers": [{"identity": "host-1@123", "last_poll_time": "2026-12-06T12:00:00Z"}],
         "last_poll_time": "2026-12-06T12:00:00Z", "polls_waiting": 1, "tasks_waiting": 0, "ready": 0,
         "backlog": 0, "oldest_backlog_time": None},
        {"kind": "activity", "pollers": [], "last_poll_time": None, "polls_waiting": 0, "tasks_waiting": 4,
         "ready": 0, "backlog": 4, "oldest_backlog_time": "2026-12-06T11:58:10Z"},
    ]}, now=now)
    out = capsys.readouterr().out
    assert "Task queue orders in namespace shop" in out
    assert "host-1@123" in out and "(10s ago)" in out and "(2m ago)" in out
    assert "Activity tasks wait and no worker polled in the last 5 minutes" in out
    assert "Workflow tasks wait" not in out
