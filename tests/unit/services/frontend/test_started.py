"""The frontend's held-back started records: dropped when the answer comes first; no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from services.frontend.started import StartedRecords, task_key
from tests.helpers import eventually, stays

pytestmark = pytest.mark.timeout(10)


def _record(run_id: str, sid: int = 2, attempt: int = 1) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": "wf", "run_id": run_id, "scheduled_event_id": sid,
            "attempt": attempt, "identity": "w", "started_time": 1}


async def test_a_record_is_sent_after_the_delay_unless_the_task_was_answered() -> None:
    sent: list[tuple[str, dict[str, Any], str | None]] = []

    async def send(name: str, record: dict[str, Any], traceparent: str | None) -> None:
        sent.append((name, record, traceparent))

    records = StartedRecords(send, delay=0.1)
    records.start()
    try:
        answered, running = _record("r1"), _record("r2")
        records.hold("RecordWorkflowTaskStarted", answered, None)
        records.hold("RecordActivityTaskStarted", running, "00-trace")
        records.settled(task_key(answered))
        await stays(lambda: sent == [] and len(records) == 1, for_seconds=0.02, what="held for the delay")
        await eventually(lambda: sent, what="the record sent")
        assert sent == [("RecordActivityTaskStarted", running, "00-trace")] and len(records) == 0
    finally:
        await records.stop()


async def test_stop_sends_what_is_still_held_and_a_failed_send_is_only_logged() -> None:
    sent: list[str] = []

    async def send(name: str, record: dict[str, Any], traceparent: str | None) -> None:
        if record["run_id"] == "bad":
            raise ConnectionError("broker gone")
        sent.append(record["run_id"])

    records = StartedRecords(send, delay=60)
    records.start()
    records.hold("RecordActivityTaskStarted", _record("bad"), None)
    records.hold("RecordActivityTaskStarted", _record("r3"), None)
    await records.stop()
    assert sent == ["r3"] and len(records) == 0
