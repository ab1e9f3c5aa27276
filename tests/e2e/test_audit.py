"""``kadence audit`` against the whole Kadence on a real broker and PostgreSQL: a clean
history reports nothing, an altered row reports exactly its workflow, and a rebuild from
the topic alone reproduces the database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kadence import Client, Worker
from kadence_protocol import avro
from services.audit import audit
from services.cluster import Cluster
from services.common.bounded import BoundedRead
from services.common.embedded import EmbeddedPostgres
from tests.helpers import eventually

from ..conftest import new_database
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, EchoWorkflow

pytestmark = pytest.mark.timeout(60)
QUEUE = "q-audit"


async def _run_workflows(client: Client, n: int) -> list[str]:
    ids = [f"audit-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    async with Worker(client, task_queue=QUEUE, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        await asyncio.gather(*(client.execute_workflow(EchoWorkflow.run, wid, id=wid, task_queue=QUEUE)
                               for wid in ids))
    return ids


async def _published(cluster: Cluster) -> None:
    """Wait until the outbox relay has put every committed event on kadence.history."""
    conn = await asyncpg.connect(cluster.settings.database_url)

    async def caught_up() -> bool:
        stored = await conn.fetchval("SELECT count(*) FROM history_events")
        async with BoundedRead(cluster.settings.kafka_bootstrap, "kadence.history") as read:
            return bool(read.total >= stored)
    try:
        await eventually(caught_up, timeout=20, what="kadence.history caught up with history_events")
    finally:
        await conn.close()


@pytest.fixture
async def second_dsn(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """Another empty database on the session server, for the rebuild."""
    async with new_database(postgres, "rebuilt") as dsn:
        yield dsn


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kadence.cli", "audit", "--no-progress", *args],
                          capture_output=True, text=True, timeout=30, check=False)


async def test_clean_history_then_an_altered_row_reports_exactly_that_workflow(cluster: Cluster,
                                                                               client: Client) -> None:
    ids = await _run_workflows(client, 3)
    await _published(cluster)
    bootstrap, dsn = cluster.settings.kafka_bootstrap, cluster.settings.database_url

    report = await audit(bootstrap, dsn)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs == 3 and report.records >= 3 * 11

    conn = await asyncpg.connect(dsn)
    try:
        run_a = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", ids[0])
        row = await conn.fetchval("SELECT data FROM history_events WHERE run_id = $1 AND event_id = 5", run_a)
        event = avro.decode(row)[1]
        event["attributes"]["input"] = '["forged"]'  # hash left as it was: exactly what tampering looks like
        await conn.execute("UPDATE history_events SET data = $1 WHERE run_id = $2 AND event_id = 5",
                           avro.encode("HistoryEvent", event), run_a)
        report = await audit(bootstrap, dsn)
        assert report.workflows == [("default", ids[0])]
        assert {(d.kind, d.event_id) for d in report.divergences} == {
            ("event-mismatch", 5), ("postgres-chain-break", 5)}
        await conn.execute("UPDATE history_events SET data = $1 WHERE run_id = $2 AND event_id = 5", row, run_a)

        run_b = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", ids[1])
        state = json.loads(await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", run_b))
        state["result"] = '"forged"'
        await conn.execute("UPDATE executions SET state = $1 WHERE run_id = $2", json.dumps(state).encode(), run_b)
        report = await audit(bootstrap, dsn)
        assert report.workflows == [("default", ids[1])]
        assert [d.kind for d in report.divergences] == ["state-mismatch"]
        assert "result" in report.divergences[0].detail
    finally:
        await conn.close()

    # The command: exit code 1 and the workflow named.
    done = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn)
    assert done.returncode == 1, done.stderr
    assert ids[1] in done.stdout and run_b in done.stdout and ids[0] not in done.stdout


async def test_from_a_time_completes_runs_joined_mid_history_from_postgres(cluster: Cluster,
                                                                         client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        handle = await client.start_workflow(ApprovalWorkflow.run, id=f"audit-wait-{uuid.uuid4().hex[:6]}",
                                             task_queue=QUEUE)
        async def waiting_for_signal() -> bool:  # the first workflow task has run
            return len(await handle.history()) >= 4
        await eventually(waiting_for_signal, what="the run waiting for its signal")
        await _published(cluster)
        # A point strictly after every record published so far (their timestamps are at most
        # now) and before the signal's: the millisecond clock moves on once.
        published = int(time.time() * 1000)
        await eventually(lambda: int(time.time() * 1000) > published, what="the clock past the published records")
        middle = int(time.time() * 1000)
        await handle.signal(ApprovalWorkflow.approve, "audit")
        assert await handle.result(timeout=20) == "approved by audit"
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url, from_time_ms=middle)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs == 1 and report.seeded == 1 and 0 < report.records < len(await handle.history())


async def test_rebuild_from_the_topic_reproduces_the_database(cluster: Cluster, client: Client,
                                                              second_dsn: str) -> None:
    await _run_workflows(client, 3)
    await _published(cluster)
    bootstrap, dsn = cluster.settings.kafka_bootstrap, cluster.settings.database_url

    done = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn, "--rebuild-into", second_dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt: 3 executions" in done.stdout

    again = await audit(bootstrap, second_dsn)
    assert again.clean and again.runs == 3
    queries = ["SELECT * FROM executions ORDER BY run_id", "SELECT * FROM history_events ORDER BY run_id, event_id",
               "SELECT * FROM current_executions ORDER BY namespace, workflow_id"]
    original, rebuilt = await asyncpg.connect(dsn), await asyncpg.connect(second_dsn)
    try:
        for query in queries:
            assert [dict(r) for r in await original.fetch(query)] == [dict(r) for r in await rebuilt.fetch(query)]
        # A second rebuild into a database that is no longer empty is refused.
        refused = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--rebuild-into", second_dsn)
        assert refused.returncode == 2 and "not empty" in refused.stderr
    finally:
        await original.close()
        await rebuilt.close()
