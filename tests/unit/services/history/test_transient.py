"""A failing workflow task's later attempts stay out of history (services/history/transient.py):
one failed triple per streak, the attempts counted in the snapshot, the successful attempt's
events written, and the fold of the written events agreeing with the live state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kadence_protocol import avro
from kadence_protocol.enums import TimerKind
from services.history import engine
from services.history.state import MutableState, events_only, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _signal_request, _start, _terminate

pytestmark = pytest.mark.timeout(10)

BOOM = {"message": "boom", "type": "ValueError", "stack_trace": "", "non_retryable": False, "details": None}
COMPLETE = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}


def _kinds(ctx: MemoryContext, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


def _agrees(ctx: MemoryContext, s: MutableState) -> None:
    """The fold of the written events is the live state, but for the transient bookkeeping."""
    folded = rebuild(s.namespace, s.workflow_id, s.run_id, ctx.events(s.run_id))
    assert events_only(json.loads(folded.dumps())) == events_only(json.loads(s.dumps()))
    # And the snapshot keeps what the events do not.
    assert MutableState.loads(s.dumps()) == s


async def _fail(ctx: MemoryContext, s: MutableState) -> None:
    assert s.wt is not None
    ref = _ref(s, s.wt.scheduled_event_id, s.wt.attempt)
    await answers.workflow_task_failed(ctx, ref | {"cause": "WorkflowError", "failure": BOOM | {
        "message": f"boom {s.wt.attempt}"}})


async def _retry_fires(ctx: MemoryContext, s: MutableState) -> None:
    failures = s.wt_failures + s.wt_transient_failures
    await engine.fire_timer(ctx, engine.TimerFiring(f"{s.run_id}/{TimerKind.WORKFLOW_TASK_RETRY}/0", ctx.now, "ns",
                                                    "wf", s.run_id, TimerKind.WORKFLOW_TASK_RETRY, 0, failures))


async def _failing_run(ctx: MemoryContext, failures: int) -> MutableState:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    for _ in range(failures):
        if s.wt is None:
            await _retry_fires(ctx, s)
        await _fail(ctx, s)
        _agrees(ctx, s)
    if s.wt is None:
        await _retry_fires(ctx, s)
    return s


async def test_a_task_failing_again_and_again_writes_its_first_failure_only() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 5)
    assert _kinds(ctx, s) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                              "WorkflowTaskFailed"]
    assert s.wt is not None and s.wt.transient and s.wt.attempt == 6 and s.wt.scheduled_event_id == 5
    assert (s.wt_failures, s.wt_transient_failures) == (1, 4)
    assert s.wt_last_failure is not None and s.wt_last_failure["message"] == "boom 1"
    assert s.wt_transient_failure is not None and s.wt_transient_failure["message"] == "boom 5"
    _agrees(ctx, s)


async def test_the_attempt_that_completes_writes_its_events_with_its_attempt_number() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 3)
    assert s.wt is not None
    await answers.workflow_task_completed(ctx, _ref(s, 5, 4) | {"commands": [COMPLETE], "started_time": ctx.now})
    events = ctx.events(s.run_id)
    assert _kinds(ctx, s)[4:] == ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted",
                                  "WorkflowExecutionCompleted"]
    assert events[4]["event_id"] == 5 and events[4]["attributes"]["attempt"] == 4
    assert events[5]["attributes"]["scheduled_event_id"] == 5 and events[5]["attributes"]["identity"] == "w"
    assert s.wt_failures == 0 and s.wt_transient_failures == 0 and s.status == "Completed"
    _agrees(ctx, s)
    # The written events are valid HistoryEvents (the store and kadence.history take them).
    for e in events:
        avro.encode("HistoryEvent", e)


async def test_an_event_written_over_a_transient_task_writes_the_task_first() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 2)
    assert s.wt is not None and s.wt.transient
    await answers.workflow_task_started(ctx, _ref(s, 5, 3))
    assert s.wt.started_event_id == 6 and len(ctx.events(s.run_id)) == 4  # started: still no event
    await engine.signal_workflow(ctx, _signal_request())
    assert _kinds(ctx, s)[4:] == ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowExecutionSignaled"]
    assert not s.wt.transient and s.wt.attempt == 3 and s.inputs_pending
    _agrees(ctx, s)
    # The worker's answer still names the task: completing the run is refused over the unseen signal.
    await answers.workflow_task_completed(ctx, _ref(s, 5, 3) | {"commands": [COMPLETE], "started_time": 0})
    assert _kinds(ctx, s)[-1] == "WorkflowTaskFailed" and s.running
    assert s.wt is not None and s.wt.transient and s.wt.attempt == 3  # a refusal is not an attempt
    _agrees(ctx, s)


async def test_a_transient_task_that_times_out_writes_nothing() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 1)
    assert s.wt is not None
    await answers.workflow_task_started(ctx, _ref(s, 5, 2))
    await engine.fire_timer(ctx, engine.TimerFiring(f"{s.run_id}/{TimerKind.WORKFLOW_TASK_TIMEOUT}/5", ctx.now, "ns",
                                                    "wf", s.run_id, TimerKind.WORKFLOW_TASK_TIMEOUT, 5, 2))
    assert len(ctx.events(s.run_id)) == 4 and s.wt is None and s.wt_transient_failures == 1
    assert s.wt_transient_failure is not None and s.wt_transient_failure["type"] == "TimeoutError"
    _agrees(ctx, s)


async def test_a_run_closed_while_its_task_fails_ends_the_streak() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 3)
    await engine.terminate_workflow(ctx, _terminate())
    assert _kinds(ctx, s)[4:] == ["WorkflowTaskScheduled", "WorkflowExecutionTerminated"]
    assert s.wt is None and s.wt_transient_failures == 0
    _agrees(ctx, s)


def test_the_retry_backs_off_from_a_second_doubling_to_ten_minutes() -> None:
    assert [engine.wt_retry_backoff_ms(n) for n in (1, 2, 3, 4, 5)] == [0, 1000, 2000, 4000, 8000]
    assert engine.wt_retry_backoff_ms(11) == 512_000
    assert engine.wt_retry_backoff_ms(12) == engine.wt_retry_backoff_ms(10_000) == 600_000


async def test_the_retry_timer_waits_the_backoff() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 2)
    await _fail(ctx, s)  # the third failure: 2 s
    armed = [row for t in ctx.transitions for row in t.timers_upsert.values() if row[5] == TimerKind.WORKFLOW_TASK_RETRY]
    assert armed[-1][1] == ctx.now + 2000 and armed[-1][7] == 3
    assert s.wt is None


async def test_a_transient_task_hands_its_worker_the_scheduled_event_it_would_write() -> None:
    ctx = MemoryContext()
    s = await _failing_run(ctx, 2)
    t = ctx.transitions[-1]
    (record,) = [avro.decode(m.value)[1] for m in t.outbox if m.topic == "kadence.tasks"]
    assert record["scheduled_event_id"] == 5 and record["attempt"] == 3 and record["first_event_id"] == 5
    (carried,) = [avro.decode(data)[1] for data in record["events"]]
    assert carried["event_id"] == 5 and carried["event_type"] == "WorkflowTaskScheduled"
    assert carried["attributes"]["attempt"] == 3
    # What it will write when it completes is the same event but for its time and hash.
    await answers.workflow_task_completed(ctx, _ref(s, 5, 3) | {"commands": [COMPLETE], "started_time": ctx.now})
    written: dict[str, Any] = ctx.events(s.run_id)[4]
    assert written["attributes"] == carried["attributes"]
