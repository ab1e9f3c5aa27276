"""No accepted input goes unseen: history refuses a workflow task that closes its run while
inputs it did not see wait (services/history/unseen.py), and the next task brings them to
workflow code (the SDK side, with the in-memory fake history)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kadence import workflow
from kadence_protocol import avro
from kadence_protocol.records import SignalWorkflowExecution
from services.history import engine
from services.history.state import MutableState, rebuild
from tests.unit import _answers as answers
from tests.unit._fake_history import FakeHistory, new_runner
from tests.unit.services.history.test_state import MemoryContext, _ref, _signal_request, _start

pytestmark = pytest.mark.timeout(10)

COMPLETE = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}
FAIL = {"command_type": "FailWorkflowExecution", "attributes": {"failure": {
    "message": "no", "type": "E", "stack_trace": "", "non_retryable": True, "details": None}}}
CONTINUE = {"command_type": "ContinueAsNewWorkflowExecution", "attributes": {
    "workflow_type": "", "task_queue": "", "input": "[]"}}
TIMER = {"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 5}}
ACTIVITY = {"command_type": "ScheduleActivityTask", "attributes": {
    "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[1]", "schedule_to_close_timeout_ms": 0,
    "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 9_000, "heartbeat_timeout_ms": 0,
    "retry_policy": None}}


def _signal(i: int = 0) -> SignalWorkflowExecution:
    return _signal_request(input=f"[{i}]", request_id=f"sig-{i}")


def _kinds(ctx: MemoryContext, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


async def _started_run(ctx: MemoryContext) -> MutableState:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_started(ctx, _ref(s, 2))
    return s


@pytest.mark.parametrize("closing", [COMPLETE, FAIL, CONTINUE], ids=["complete", "fail", "continue-as-new"])
async def test_a_closing_task_with_a_signal_it_did_not_see_is_refused_and_a_new_task_scheduled(
        closing: dict[str, Any]) -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await engine.signal_workflow(ctx, _signal())  # recorded after the task was scheduled: unseen
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [TIMER, closing]})

    assert _kinds(ctx, s)[-3:] == ["WorkflowExecutionSignaled", "WorkflowTaskFailed", "WorkflowTaskScheduled"]
    failed = ctx.events(s.run_id)[-2]["attributes"]
    assert failed["cause"] == "UnhandledCommand" and failed["scheduled_event_id"] == 2
    # None of the task's commands applied, not even the ones that do not close the run.
    assert "TimerStarted" not in _kinds(ctx, s) and not s.timers
    assert s.running and len(ctx.runs) == 1  # no new run either
    # The new task is handed out at once, as attempt 1: the refusal was no failure of the worker's.
    assert s.wt is not None and s.wt.attempt == 1 and s.wt_failures == 0
    assert [avro.decode(m.value)[0] for m in ctx.transitions[-1].outbox] == ["WorkflowTask"]


async def test_the_new_task_which_saw_the_signal_closes_the_run() -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await engine.signal_workflow(ctx, _signal())
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [COMPLETE]})
    assert s.wt is not None
    new = s.wt.scheduled_event_id
    await answers.workflow_task_completed(ctx, _ref(s, new) | {"commands": [COMPLETE]})
    assert s.status == "Completed"
    # The live state is what the fold of the events gives (a rebuild and an audit agree).
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()


async def test_refusals_repeat_while_signals_keep_coming_without_backoff() -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    for i in range(3):
        assert s.wt is not None
        sid = s.wt.scheduled_event_id
        await engine.signal_workflow(ctx, _signal(i))
        await answers.workflow_task_completed(ctx, _ref(s, sid) | {"commands": [COMPLETE]})
        assert s.running and s.wt is not None and s.wt.attempt == 1
    assert _kinds(ctx, s).count("WorkflowTaskFailed") == 3


async def test_a_closing_task_that_saw_every_input_completes() -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [TIMER, COMPLETE]})
    assert s.status == "Completed"
    assert "WorkflowTaskFailed" not in _kinds(ctx, s)


async def test_a_task_that_does_not_close_the_run_completes_and_the_signal_gets_the_next() -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await engine.signal_workflow(ctx, _signal())
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [TIMER]})
    assert _kinds(ctx, s)[-3:] == ["WorkflowTaskCompleted", "TimerStarted", "WorkflowTaskScheduled"]


async def test_a_worker_cannot_give_the_refusal_cause_to_fail_a_task_without_it_counting() -> None:
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await answers.workflow_task_failed(ctx, _ref(s, 2) | {"cause": "UnhandledCommand", "failure": None})
    # The second attempt is transient (transient.py): no event of its own.
    assert ctx.events(s.run_id)[-1]["attributes"]["cause"] == "WorkerUnhandledCommand"
    assert s.wt_failures == 1 and s.wt is not None and s.wt.attempt == 2 and s.wt.transient


async def test_a_task_run_ahead_that_closes_the_run_is_not_taken_over_a_signal_it_did_not_see() -> None:
    """The run-ahead path: the worker ran the next task on the activity's result alone and
    completed the workflow; a signal came first, so history hands out a task that brings both."""
    ctx = MemoryContext()
    s = await _started_run(ctx)
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [ACTIVITY], "started_time": ctx.now})
    sid = next(e["event_id"] for e in ctx.events(s.run_id) if e["event_type"] == "ActivityTaskScheduled")
    await answers.activity_started(ctx, _ref(s, sid))
    await engine.signal_workflow(ctx, _signal())
    assert s.wt is not None  # the signal is owed a task already
    owed = s.wt.scheduled_event_id
    ahead = {"ahead_id": 7, "after_ahead_id": 0, "after_scheduled_event_id": 2, "after_started_time": ctx.now,
             "started_time": ctx.now, "commands": [COMPLETE]}
    await answers.activity_completed(ctx, _ref(s, sid) | {"result": "1", "workflow_task": ahead})
    assert s.running and s.wt is not None and s.wt.scheduled_event_id == owed
    assert "WorkflowExecutionCompleted" not in _kinds(ctx, s)
    # That task, scheduled before the result came, did not see it either: completing is refused too.
    await answers.workflow_task_completed(ctx, _ref(s, owed) | {"commands": [COMPLETE]})
    assert s.running and _kinds(ctx, s)[-2:] == ["WorkflowTaskFailed", "WorkflowTaskScheduled"]


# ---- the SDK side: the next task brings the signals to workflow code -------------------------


@workflow.defn
class FirstSignalThenCount:
    def __init__(self) -> None:
        self.seen: list[int] = []

    @workflow.run
    async def run(self) -> list[int]:
        await workflow.wait_condition(lambda: bool(self.seen))
        return self.seen

    @workflow.signal
    def go(self, i: int) -> None:
        self.seen.append(i)


def test_after_a_refused_closing_task_the_next_task_delivers_every_signal() -> None:
    history = FakeHistory("FirstSignalThenCount")
    runner = new_runner(FirstSignalThenCount, history)
    assert runner.apply(history.task_events()) == []  # waits for a signal
    history.complete_task([])
    history.signal("go", 0)
    history.schedule_task()
    commands = [c.to_json() for c in runner.apply(history.task_events())]
    assert [c["command_type"] for c in commands] == ["CompleteWorkflowExecution"]
    assert runner.finished  # the worker drops a finished run from its cache
    # Signals recorded while that task ran: history refuses its completion and schedules another.
    history.signal("go", 1)
    history.signal("go", 2)
    history.fail_task(cause="UnhandledCommand")
    history.schedule_task()
    # The next task (the worker replays: its cache let the run go) sees every signal.
    replay = new_runner(FirstSignalThenCount, history)
    history.first_event_id = 1
    commands = [c.to_json() for c in replay.apply(history.task_events())]
    assert [c["command_type"] for c in commands] == ["CompleteWorkflowExecution"]
    assert json.loads(commands[0]["attributes"]["result"]) == [0, 1, 2]
