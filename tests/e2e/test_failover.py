"""Failover: two history processes share the shards; one is killed with SIGKILL mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from kadence import Client, Worker
from kadence_protocol import avro
from services.common import db, kafka
from services.common.config import Settings
from services.common.matching.client import MatchingClient
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, EchoWorkflow

pytestmark = pytest.mark.timeout(240)

WORKFLOWS = 200
SHARDS = 4
ROOT = Path(__file__).resolve().parents[2]


def _history_process(bootstrap: str, dsn: str, log: Path, *, shards: int = SHARDS, session_ms: int = 2000,
                     **settings: str) -> subprocess.Popen[bytes]:
    """A history service in a process of its own (``settings``: more KADENCE_* variables), logging to ``log``."""
    env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": bootstrap, "KADENCE_DATABASE_URL": dsn,
           "KADENCE_SHARDS": str(shards), "KADENCE_TASK_PARTITIONS": "2", "KADENCE_SESSION_TIMEOUT_MS": str(session_ms),
           **settings}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.history"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)


async def _fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def _owners(dsn: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return Counter(r["owner"] for r in await conn.fetch("SELECT owner FROM shards"))
    finally:
        await conn.close()


async def test_kill_one_history_process_mid_run(broker, fresh_dsn, tmp_path: Path) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=SHARDS, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    procs = [_history_process(broker.bootstrap, fresh_dsn, tmp_path / f"history-{i}.log") for i in range(2)]
    pool = await db.create_pool(fresh_dsn)
    matching = MatchingService(settings, pool=pool)
    frontend = None
    matching_client = None
    try:
        await matching.start()
        matching_client = MatchingClient(pool, settings.task_partitions, local=matching)
        frontend = FrontendService(settings, pool=pool, matching=matching_client)
        await frontend.start()
        # Both history processes must own shards before the run starts.
        async def shared() -> bool:
            if not all(p.poll() is None for p in procs):  # fails at once: an AssertionError would be retried
                pytest.fail("a history process exited at start; see its log")
            return len(await _owners(fresh_dsn)) == 2
        await eventually(shared, timeout=30, every=0.1, what="the two history processes sharing the shards")

        client = await Client.connect(frontend.url, namespace="default")
        async with Worker(client, task_queue="q-failover", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handles = await asyncio.gather(*(
                client.start_workflow(EchoWorkflow.run, f"value-{i}", id=f"failover-{i}", task_queue="q-failover")
                for i in range(WORKFLOWS)))
            results: dict[str, str] = {}

            async def wait(i: int) -> None:
                results[f"failover-{i}"] = await handles[i].result()

            waiters = [asyncio.create_task(wait(i)) for i in range(WORKFLOWS)]
            await eventually(lambda: len(results) >= WORKFLOWS // 4, timeout=60, every=0.01,
                             what="a quarter of the workflows completed before the kill")
            procs[0].send_signal(signal.SIGKILL)  # mid-run, no goodbye
            procs[0].wait(timeout=10)
            await asyncio.wait_for(asyncio.gather(*waiters), timeout=150)
        await client.close()

        assert results == {f"failover-{i}": f"value-{i}" for i in range(WORKFLOWS)}
        conn = await asyncpg.connect(fresh_dsn)
        try:
            runs = await conn.fetch("SELECT workflow_id, run_id, status, next_event_id FROM executions")
            assert len(runs) == WORKFLOWS and {r["status"] for r in runs} == {"Completed"}
            for run in runs:
                rows = await conn.fetch("SELECT event_id, data FROM history_events WHERE run_id = $1 ORDER BY event_id",
                                        run["run_id"])
                ids = [r["event_id"] for r in rows]
                assert ids == list(range(1, run["next_event_id"])), f"gap or duplicate in {run['workflow_id']}"
                kinds = [avro.decode(r["data"])[1]["event_type"] for r in rows]
                assert kinds.count("WorkflowExecutionCompleted") == 1
                assert kinds.count("ActivityTaskCompleted") == 1
        finally:
            await conn.close()
        # No committed event is missing from the audit log: what the killed process committed and
        # had not published, the survivor rebuilt from history_events and published (the outbox
        # row names the audit records since migration 0016; it no longer holds their bytes).
        committed = {(r["run_id"], r["event_id"]) for r in await _fetch(fresh_dsn, "SELECT run_id, event_id"
                                                                                   " FROM history_events")}
        published: set[tuple[str, int]] = set()
        audit = AIOKafkaConsumer(kafka.HISTORY, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 fetch_max_wait_ms=50)
        await audit.start()
        try:
            async def all_published() -> bool:
                for records in (await audit.getmany(timeout_ms=200)).values():
                    for r in records:
                        _, record = avro.decode(r.value)
                        published.add((record["run_id"], record["event"]["event_id"]))
                return committed <= published
            await eventually(all_published, timeout=60, every=0.05, what="every committed event on kadence.history")
        finally:
            await audit.stop()
        # The survivor takes every shard over: once the dead one's session runs out, whether or
        # not a workflow of its shards was still waiting by then (all may have finished first).
        async def taken_over() -> bool:
            return len(await _owners(fresh_dsn)) == 1
        await eventually(taken_over, timeout=60, every=0.2, what="the survivor owning every shard")
    finally:
        if frontend is not None:
            await frontend.stop()
        if matching_client is not None:
            await matching_client.close()
        await matching.stop()
        await pool.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
