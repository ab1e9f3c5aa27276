"""The scheduler alone on the real broker and PostgreSQL, with no history consuming its
starts: a history that lags behind must not let an overlap policy see the previous run as
closed because it is not applied yet."""

from __future__ import annotations

import json

import asyncpg
import pytest

from services.common import db, kafka
from services.common.embedded import EmbeddedBroker
from services.common.schedules import ScheduleAction, ScheduleSpec
from services.history.scheduler import UNAPPLIED_GRACE_MS, Scheduler

pytestmark = pytest.mark.timeout(60)

T0 = 1_796_083_200_000  # 2026-12-01T00:00:00Z, a whole second


async def _schedule(pool: asyncpg.Pool, overlap: str) -> None:
    spec = ScheduleSpec.from_json({"interval": "1s"})
    action = ScheduleAction("T", "q-nobody")
    await pool.execute(
        "INSERT INTO schedules (namespace, schedule_id, shard_id, spec, action, overlap, catchup_window_ms,"
        " next_nominal, next_fire_at) VALUES ('default', $1, 0, $2::jsonb, $3::jsonb, $1, 60000, $4, $4)",
        overlap, json.dumps(spec.to_json()), json.dumps(action.to_json()), T0)


async def test_a_start_produced_but_not_applied_yet_counts_as_running(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 1, 1)
    pool = await db.create_pool(fresh_dsn, max_size=2)
    producer = kafka.new_producer(broker.bootstrap)
    await producer.start()
    try:
        await pool.execute("INSERT INTO shards (shard_id, range_id) VALUES (0, 7)")
        await _schedule(pool, "skip")
        now = [T0 / 1000]
        scheduler = Scheduler(pool, producer, lambda: {0: 7}, clock=lambda: now[0])
        assert await scheduler.round() == 1  # the firing of T0 starts a workflow nobody applies
        now[0] += 1.0
        # T0 + 1 s: the previous start is not in current_executions, yet it holds the skip.
        assert await scheduler.round() == 0
        row = await pool.fetchrow("SELECT fired, skipped FROM schedules WHERE schedule_id = 'skip'")
        assert (row["fired"], row["skipped"]) == (1, 1)
        # Never applied after the grace (its start was refused, say): it no longer holds the schedule.
        now[0] += UNAPPLIED_GRACE_MS / 1000
        assert await scheduler.round() == 1
    finally:
        await producer.stop()
        await pool.close()
