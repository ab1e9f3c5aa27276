"""A history process frozen (SIGSTOP) past its shard lease, then continued.

Two history processes (``python -m services.history``) share the shards; one is frozen while
its workflows wait on activities and signals are coming in. The other takes its shards once
the frozen one's group session runs out; the workflows complete there. When the frozen one
wakes, its stale range_id fences it: nothing it had in hand is committed, its shards stop
quietly ("has a new owner") and it goes on as a member of the group, healthy, taking shards
again in the rebalance. Every signal reaches its run once, every run completes once, event
ids stay dense, and a second round of workflows completes with both processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from kadence import Client, Worker, activity, workflow
from kadence_protocol import avro
from services.common import db, kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.matching.client import MatchingClient
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import elapse, eventually

from .test_command_notices import end_processes
from .test_failover import _history_process as failover_history_process

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
SHARDS = 4
WORKFLOWS = 40
SIGNALS = 3
SESSION_MS = 2000
FREEZE_S = 8.0  # four sessions
RELEASE = asyncio.Event()
ENTERED: Counter[str] = Counter()


@activity.defn(name="held_step")
async def held_step(value: str) -> str:
    ENTERED[value] += 1
    await RELEASE.wait()
    return value


@workflow.defn
class Counted:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.run
    async def run(self, value: str) -> str:
        done: str = await workflow.execute_activity(held_step, value, start_to_close_timeout=timedelta(seconds=120))
        await workflow.wait_condition(lambda: len(self.seen) >= SIGNALS)
        return f"{done}:{','.join(sorted(self.seen))}"

    @workflow.signal
    def poke(self, tag: str) -> None:
        self.seen.append(tag)


def _history_process(bootstrap: str, dsn: str, log: Path) -> subprocess.Popen[bytes]:
    return failover_history_process(bootstrap, dsn, log, shards=SHARDS, session_ms=SESSION_MS,
                                    KADENCE_HISTORY_HEALTH_PORT="0")


async def _owners(dsn: str) -> dict[int, tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["shard_id"]: (r["owner"], r["range_id"])
                for r in await conn.fetch("SELECT shard_id, owner, range_id FROM shards")}
    finally:
        await conn.close()


async def _events(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM history_events"))
    finally:
        await conn.close()


def _health_url(log: Path) -> str:
    found = re.search(r"history serving at (\S+)", log.read_text())
    assert found, "the history process names its health address"
    return found.group(1).rstrip(" (,")


async def _health(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/health",
                                                         timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def _round(client: Client, prefix: str, *, freeze: subprocess.Popen[bytes] | None = None,
                 dsn: str = "") -> dict[str, float]:
    """WORKFLOWS workflows through their activity and SIGNALS signals each; with ``freeze``,
    that process is frozen once every activity runs, until every workflow has completed."""
    ids = [f"{prefix}-{i}" for i in range(WORKFLOWS)]
    handles = await asyncio.gather(*(client.start_workflow(Counted.run, w, id=w, task_queue="q-frozen-history")
                                     for w in ids))
    await eventually(lambda: all(ENTERED[w] for w in ids), timeout=60, what="every activity running")
    figures: dict[str, float] = {}

    async def poke(i: int, tag: str) -> None:
        await handles[i].signal(Counted.poke, tag)

    # The freeze strikes mid-burst: signals in flight, some in the frozen process's hands.
    events = await _events(dsn) if freeze is not None else 0
    signals = asyncio.gather(*(poke(i, f"s{n}") for n in range(SIGNALS) for i in range(WORKFLOWS)))
    frozen_at = time.monotonic()
    if freeze is not None:
        async def under_way() -> bool:
            return await _events(dsn) >= events + WORKFLOWS // 2
        await eventually(under_way, timeout=60, every=0.01, what="the signal burst under way")
        before = await _owners(dsn)
        os.kill(freeze.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
    if freeze is not None:
        async def taken_over() -> bool:
            now = await _owners(dsn)
            return len({owner for owner, _ in now.values()}) == 1 and all(now[p][1] > before[p][1] for p in before)
        await eventually(taken_over, timeout=60, every=0.1, what="the survivor owning every shard")
        figures["takeover_s"] = time.monotonic() - frozen_at
    RELEASE.set()
    await asyncio.wait_for(signals, timeout=120)
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=120)
    figures["all_done_s"] = time.monotonic() - frozen_at
    assert results == [f"{w}:{','.join(f's{n}' for n in range(SIGNALS))}" for w in ids]
    RELEASE.clear()
    return figures


async def _check_histories(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch("SELECT workflow_id, run_id, status, next_event_id FROM executions")
        assert runs and {r["status"] for r in runs} == {"Completed"}
        for run in runs:
            rows = await conn.fetch("SELECT event_id, data FROM history_events WHERE run_id = $1 ORDER BY event_id",
                                    run["run_id"])
            assert [r["event_id"] for r in rows] == list(range(1, run["next_event_id"])), run["workflow_id"]
            kinds = Counter(avro.decode(r["data"])[1]["event_type"] for r in rows)
            assert kinds["WorkflowExecutionCompleted"] == 1 and kinds["ActivityTaskCompleted"] == 1, kinds
            assert kinds["WorkflowExecutionSignaled"] == SIGNALS, (run["workflow_id"], kinds)
    finally:
        await conn.close()


async def test_a_frozen_history_process_is_fenced_and_steps_down(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=SHARDS, task_partitions=2,
                        frontend_port=0, session_timeout_ms=SESSION_MS)
    logs = [tmp_path / f"history-{i}.log" for i in range(2)]
    procs = [_history_process(broker.bootstrap, fresh_dsn, log) for log in logs]
    pool = await db.create_pool(fresh_dsn)
    matching = MatchingService(settings, pool=pool)
    frontend: FrontendService | None = None
    matching_client: MatchingClient | None = None
    stopped = False
    try:
        await matching.start()
        matching_client = MatchingClient(pool, settings.task_partitions, local=matching)
        frontend = FrontendService(settings, pool=pool, matching=matching_client)
        await frontend.start()

        async def shared() -> bool:
            if not all(p.poll() is None for p in procs):
                pytest.fail("a history process exited at start; see its log")
            return len({owner for owner, _ in (await _owners(fresh_dsn)).values()}) == 2
        await eventually(shared, timeout=60, every=0.1, what="the two history processes sharing the shards")
        frozen, frozen_log = procs[0], logs[0]
        health_url = _health_url(frozen_log)

        client = await Client.connect(frontend.url, namespace="default")
        async with Worker(client, task_queue="q-frozen-history", workflows=[Counted], activities=[held_step]):
            stopped = True
            figures = await _round(client, "frozen", freeze=frozen, dsn=fresh_dsn)
            await elapse(max(0.0, FREEZE_S - figures["all_done_s"]))  # frozen this long at least
            woke_at = time.monotonic()
            os.kill(frozen.pid, signal.SIGCONT)
            stopped = False
            # Awake: its shards stop quietly on the stale range_id, and it stays up and healthy.
            # (Its group member is gone: the partitions are revoked, which stops the shards; a batch
            # it had in hand would fail its commit on the stale range_id: "has a new owner".)
            await eventually(lambda: re.search(r"Revoking previously assigned partitions frozenset\(\{T",
                                               frozen_log.read_text()),
                             timeout=30, what="the woken process giving its shards up")

            async def healthy_again() -> bool:
                status, body = await _health(health_url)
                assert status == 200 and body["history"]["shards"], (status, body)  # type: ignore[index]
                return True
            await eventually(healthy_again, timeout=60, every=0.2, what="the woken process healthy, owning shards")
            figures["rejoined_s"] = time.monotonic() - woke_at
            assert frozen.poll() is None, "the woken process exited"
            second = await _round(client, "after")
        await client.close()
        print(f"frozen history: {figures}; second round {second}")
        assert "CRITICAL" not in frozen_log.read_text() and "Traceback" not in frozen_log.read_text(), \
            frozen_log.read_text()[-3000:]
        await _check_histories(fresh_dsn)
    finally:
        if stopped:
            os.kill(procs[0].pid, signal.SIGCONT)
        if frontend is not None:
            await frontend.stop()
        if matching_client is not None:
            await matching_client.close()
        await matching.stop()
        await pool.close()
        end_processes(procs)
