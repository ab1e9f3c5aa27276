"""The continuous audit (faust-streaming app) run as its own process on a real broker: it
folds kadence.history as published and logs a chain break and a gap as they happen."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kadence_protocol import avro
from services.common import chain, kafka
from services.common.embedded import EmbeddedBroker
from tests.processes import stop_group

pytestmark = pytest.mark.timeout(60)


def _records(run_id: str, tamper: int | None = None, drop: int | None = None) -> list[bytes]:
    out, previous = [], ""
    for i in range(1, 5):
        event: dict[str, Any] = {"event_id": i, "event_time": i, "event_type": "MarkerRecorded",
                                 "attributes": {"marker_name": "m", "details": None,
                                                "workflow_task_completed_event_id": 0}}
        event["hash"] = chain.event_hash(previous, event)
        previous = event["hash"]
        if i == tamper:
            event["attributes"]["marker_name"] = "tampered"
        if i != drop:
            out.append(avro.encode("HistoryRecord", {"namespace": "default", "workflow_id": run_id,
                                                     "run_id": run_id, "event": event}))
    return out


async def test_stream_app_logs_a_chain_break_and_a_gap(broker: EmbeddedBroker, tmp_path: Path) -> None:
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    producer = kafka.new_producer(broker.bootstrap)
    await producer.start()
    try:
        for run_id, records in (("clean", _records("clean")), ("tampered", _records("tampered", tamper=2)),
                                ("gappy", _records("gappy", drop=3))):
            for value in records:
                await producer.send_and_wait(kafka.HISTORY, value, key=f"default/{run_id}".encode())
    finally:
        await producer.stop()
    seen = await _run_until(broker, tmp_path, lambda seen: any("chain-break at event 2" in s for s in seen)
                            and any("gap: event" in s for s in seen))
    findings = [s for s in seen if "audit:" in s]
    assert not any("run clean" in s for s in findings)
    assert any("run tampered: chain-break at event 2" in s for s in findings)
    assert any("run gappy: gap: event 4 arrived while 3 is missing" in s for s in findings)


async def test_stream_app_reads_past_a_record_the_client_cannot_unpack(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of kadence.history with a header key that is not UTF-8 stopped the worker
    (faust's fetch raised), and again at every restart: nothing after it was audited."""
    from .raw_records import UNREADABLE, raw_producer

    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    async with raw_producer(broker.bootstrap, monkeypatch) as raw:
        for value in _records("clean"):
            await raw.send_and_wait(kafka.HISTORY, value, key=b"default/clean", partition=0)
        odd = await raw.send_and_wait(kafka.HISTORY, b"\x00junk", key=b"default/junk", partition=0,
                                      headers=UNREADABLE)
        for value in _records("gappy", drop=3):
            await raw.send_and_wait(kafka.HISTORY, value, key=b"default/gappy", partition=0)
    seen = await _run_until(broker, tmp_path, lambda seen: any("gap: event" in s for s in seen))
    assert any(f"{kafka.HISTORY}[0]@{odd.offset}: the Kafka client cannot unpack it" in s for s in seen)
    findings = [s for s in seen if "audit:" in s]
    assert any(f"{kafka.HISTORY}[0]@{odd.offset}: a record with no value" in s for s in findings)
    assert any("run gappy: gap: event 4 arrived while 3 is missing" in s for s in findings)


async def _run_until(broker: EmbeddedBroker, tmp_path: Path, done: Callable[[list[str]], bool]) -> list[str]:
    """Run the audit app until ``done`` holds for the lines it printed (40 s at most); the lines."""
    env = dict(os.environ, KADENCE_KAFKA_BOOTSTRAP=broker.bootstrap, KADENCE_AUDIT_SESSION_TIMEOUT_S="2",
               KADENCE_HOME=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-m", "services.history.audit.stream"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async def until_done() -> None:
            while not done(seen):
                line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("the audit app exited:\n" + "".join(seen[-30:]))
                seen.append(line)
        await asyncio.wait_for(until_done(), 40)
    finally:
        stop_group(process)  # faust may linger after SIGTERM: its group, then firmly
        process.stdout.close()
    return seen
