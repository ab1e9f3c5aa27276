"""One trace through a kill -9 of history: the run's state, reloaded from PostgreSQL by the
next history process, carries the trace context, so the timer it fires stays in the trace.

History runs as a process of its own (untraced: it carries the producers' trace headers on,
docs/protocol.md); the frontend, matching and the worker run here with spans in memory.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kadence import Client, Worker, workflow
from services.common import db, kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.matching.client import MatchingClient
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import eventually
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


@workflow.defn
class SleepyTraced:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "woke"


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    with in_memory_spans() as exporter:
        yield exporter


def _history(bootstrap: str, dsn: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": bootstrap, "KADENCE_DATABASE_URL": dsn, "KADENCE_SHARDS": "2",
           "KADENCE_TASK_PARTITIONS": "2", "KADENCE_SESSION_TIMEOUT_MS": "2000"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.history"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)


async def _owned(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return all(r["owner"] for r in await conn.fetch("SELECT owner FROM shards")) and \
            len(await conn.fetch("SELECT 1 FROM shards")) == 2
    finally:
        await conn.close()


async def test_a_timer_fired_by_the_next_history_process_stays_in_the_trace(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    procs = [_history(broker.bootstrap, fresh_dsn, tmp_path / "history-0.log")]
    pool = await db.create_pool(fresh_dsn)
    matching = MatchingService(settings, pool=pool)
    frontend: FrontendService | None = None
    wid = f"killed-{uuid.uuid4().hex[:8]}"
    try:
        await matching.start()
        frontend = FrontendService(settings, pool=pool,
                                   matching=MatchingClient(pool, settings.task_partitions, local=matching))
        await frontend.start()
        await eventually(functools.partial(_owned, fresh_dsn), timeout=30, every=0.1,  # type: ignore[arg-type]
                         what="history owning both shards")
        client = await Client.connect(frontend.url, namespace="default")
        try:
            # No timer run-ahead: the firing must be history's own, in the next process.
            async with Worker(client, task_queue="q-killed", workflows=[SleepyTraced], run_ahead=False):
                handle = await client.start_workflow(SleepyTraced.run, 6.0, id=wid, task_queue="q-killed")

                def first_task() -> bool:
                    return any(s.name == "RunWorkflowTask SleepyTraced" for s in spans.get_finished_spans())
                await eventually(first_task, timeout=30, what="the first workflow task ran")
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait(timeout=10)
                procs.append(_history(broker.bootstrap, fresh_dsn, tmp_path / "history-1.log"))
                assert await handle.result() == "woke"
        finally:
            await client.close()

        def one_trace() -> bool:
            finished = list(spans.get_finished_spans())
            start = next(s for s in finished if s.kind == SpanKind.SERVER
                         and (s.attributes or {}).get("http.route") == "/api/v1/namespaces/{namespace}/workflows")
            tasks = [s for s in finished if s.name == "RunWorkflowTask SleepyTraced"]
            assert len(tasks) >= 2, [s.name for s in finished]  # before the kill and after the timer
            assert {s.context.trace_id for s in tasks} == {start.context.trace_id}
            return True
        await eventually(one_trace, what="both workflow tasks in the start's trace")
    finally:
        if frontend is not None:
            await frontend.stop()
        await matching.stop()
        await pool.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=20)
