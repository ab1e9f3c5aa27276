"""The visibility faust app (``python -m services.visibility``) run as its own process on a real
broker and database: it projects kadence.history into visibility rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kadence_protocol import avro
from services.common import db, kafka
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually
from tests.processes import stop_group

pytestmark = pytest.mark.timeout(90)

STARTED = {"workflow_type": "Order", "task_queue": "q", "input": None, "execution_timeout_ms": 0,
           "workflow_task_timeout_ms": 10000, "request_id": "r", "identity": "", "continued_execution_run_id": None,
           "attempt": 1}


def _records(run_id: str, close: bool) -> list[bytes]:
    events: list[dict[str, Any]] = [
        {"event_id": 1, "event_time": 1_000, "event_type": "WorkflowExecutionStarted", "attributes": STARTED},
        {"event_id": 2, "event_time": 2_000, "event_type": "MarkerRecorded",
         "attributes": {"marker_name": "m", "details": None, "workflow_task_completed_event_id": 0}},
    ]
    if close:
        events.append({"event_id": 3, "event_time": 3_000, "event_type": "WorkflowExecutionTerminated",
                       "attributes": {"reason": "r", "identity": ""}})
    return [avro.encode("HistoryRecord", {"namespace": "default", "workflow_id": f"wf-{run_id}", "run_id": run_id,
                                          "event": {**e, "hash": ""}}) for e in events]


async def test_the_faust_app_projects_history_into_rows(broker: EmbeddedBroker, fresh_dsn: str,
                                                         tmp_path: Path) -> None:
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    await db.migrate(fresh_dsn)
    producer = kafka.new_producer(broker.bootstrap)
    await producer.start()
    try:
        for run_id, close in (("open", False), ("shut", True)):
            for value in _records(run_id, close) * 2:  # everything delivered twice: no harm
                await producer.send_and_wait(kafka.HISTORY, value, key=f"default/wf-{run_id}".encode())
        await producer.send_and_wait(kafka.HISTORY, b"not avro", key=b"default/junk")
    finally:
        await producer.stop()
    env = dict(os.environ, KADENCE_KAFKA_BOOTSTRAP=broker.bootstrap, KADENCE_DATABASE_URL=fresh_dsn,
               KADENCE_VISIBILITY_SESSION_TIMEOUT_S="2", KADENCE_HOME=str(tmp_path))
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "services.visibility"], env=env, cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        async def rows() -> list[tuple[Any, ...]]:
            assert process.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            found = await conn.fetch("SELECT run_id, workflow_type, status, start_time, close_time, history_length"
                                     " FROM visibility ORDER BY run_id")
            return [tuple(r) for r in found] if len(found) == 2 and found[1]["status"] == "Terminated" else []
        assert await eventually(rows, timeout=60, what="the projected rows") == [
            ("open", "Order", "Running", 1_000, None, 2), ("shut", "Order", "Terminated", 1_000, 3_000, 3)]
    finally:
        await conn.close()
        stop_group(process)
        log.close()


async def test_the_faust_app_reads_past_a_record_the_client_cannot_unpack(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of kadence.history with a header key that is not UTF-8 stopped the worker
    (faust's fetch raised), and again at every restart."""
    from .raw_records import UNREADABLE, raw_producer

    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    await db.migrate(fresh_dsn)
    async with raw_producer(broker.bootstrap, monkeypatch) as raw:
        for value in _records("open", False):
            await raw.send_and_wait(kafka.HISTORY, value, key=b"default/wf-open", partition=0)
        odd = await raw.send_and_wait(kafka.HISTORY, b"\x00junk", key=b"default/junk", partition=0,
                                      headers=UNREADABLE)
        for value in _records("shut", True):
            await raw.send_and_wait(kafka.HISTORY, value, key=b"default/wf-shut", partition=0)
    env = dict(os.environ, KADENCE_KAFKA_BOOTSTRAP=broker.bootstrap, KADENCE_DATABASE_URL=fresh_dsn,
               KADENCE_VISIBILITY_SESSION_TIMEOUT_S="2", KADENCE_HOME=str(tmp_path))
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "services.visibility"], env=env, cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        async def rows() -> list[tuple[Any, ...]]:
            assert process.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            found = await conn.fetch("SELECT run_id, status FROM visibility ORDER BY run_id")
            return [tuple(r) for r in found] if len(found) == 2 else []
        assert await eventually(rows, timeout=60, what="the projected rows") == [
            ("open", "Running"), ("shut", "Terminated")]
        assert f"{kafka.HISTORY}[0]@{odd.offset}: the Kafka client cannot unpack it" in \
            (tmp_path / "app.log").read_text()
    finally:
        await conn.close()
        stop_group(process)
        log.close()
