"""Cancellation in history, without I/O: the operations of services/history/cancellation.py
on in-memory runs, the fold of the new events, and their Avro round trip."""

from __future__ import annotations

import functools
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from kadence_protocol import avro, records
from services.frontend.engine import Engine as FrontendEngine
from services.frontend.engine import _answered
from services.frontend.errors import WorkflowNotFound
from services.frontend.reads import Execution
from services.frontend.tokens import TaskToken
from services.history import cancellation, engine
from services.history.state import MutableState, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _signal_request, _start

pytestmark = pytest.mark.timeout(10)


def _cancel(**kw: Any) -> records.RequestCancelWorkflowExecution:
    return records.RequestCancelWorkflowExecution.from_dict({
        "namespace": "ns", "workflow_id": "wf", "run_id": None, "reason": "stop", "request_id": "c1", "identity": "me",
        "reply_to": None, **kw})


def _activity(activity_id: str = "1", heartbeat_timeout_ms: int = 0) -> dict[str, Any]:
    return {"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": activity_id, "activity_type": "a", "task_queue": "", "input": "[]",
        "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 60_000,
        "heartbeat_timeout_ms": heartbeat_timeout_ms, "retry_policy": None}}


def _kinds(ctx: MemoryContext, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


async def _running(ctx: MemoryContext, commands: list[dict[str, Any]] | None = None) -> MutableState:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": commands or []})
    return s


def _rebuilt(ctx: MemoryContext, s: MutableState) -> MutableState:
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    return rebuild("ns", "wf", s.run_id, events)


async def test_a_cancel_request_is_recorded_once_and_schedules_a_workflow_task() -> None:
    ctx = MemoryContext()
    s = await _running(ctx)
    await cancellation.request_cancel_workflow(ctx, _cancel())
    assert _kinds(ctx, s)[-2:] == ["WorkflowExecutionCancelRequested", "WorkflowTaskScheduled"]
    requested = ctx.events(s.run_id)[-2]["attributes"]
    assert requested == {"reason": "stop", "identity": "me", "request_id": "c1"}
    assert s.cancel_requested and s.running
    # A retry (same request id) and a second request (another id) add nothing.
    await cancellation.request_cancel_workflow(ctx, _cancel())
    await cancellation.request_cancel_workflow(ctx, _cancel(request_id="c2"))
    assert _kinds(ctx, s).count("WorkflowExecutionCancelRequested") == 1
    assert [r["ok"] for r in ctx.replies[-3:]] == [True, True, True]


async def test_cancel_workflow_closes_the_run_as_canceled_and_its_timers_go() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [{"command_type": "StartTimer", "attributes": {"timer_id": "1",
                                                                          "start_to_fire_timeout_ms": 60_000}}])
    await cancellation.request_cancel_workflow(ctx, _cancel())
    sid = s.wt.scheduled_event_id if s.wt else 0
    await answers.workflow_task_completed(ctx, _ref(s, sid) | {"commands": [
        {"command_type": "CancelTimer", "attributes": {"timer_id": "1"}},
        {"command_type": "CancelWorkflowExecution", "attributes": {"details": '"bye"'}}]})
    assert _kinds(ctx, s)[-2:] == ["TimerCanceled", "WorkflowExecutionCanceled"]
    assert s.status == "Canceled" and s.cancel_details == '"bye"' and not s.timers
    t = ctx.transitions[-1]
    assert t.close().closed and t.delete_all_timers
    assert _rebuilt(ctx, s).dumps() == s.dumps()


async def _canceled(ctx: MemoryContext) -> MutableState:
    s = await _running(ctx)
    await cancellation.request_cancel_workflow(ctx, _cancel())
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id if s.wt else 0) | {"commands": [
        {"command_type": "CancelWorkflowExecution", "attributes": {"details": None}}]})
    assert s.status == "Canceled"
    return s


async def test_cancel_of_a_closed_run_is_not_found_but_a_retry_of_a_recorded_one_is_ok() -> None:
    """A closed run's refusal is WorkflowNotFound, as HTTP answers it (decision 0022), so a
    Kafka producer's reply (or dead letter) names what an HTTP caller gets; the message keeps
    how the run closed."""
    ctx = MemoryContext()
    s = await _canceled(ctx)
    await cancellation.request_cancel_workflow(ctx, _cancel())  # the same request, retried
    assert ctx.replies[-1]["ok"] is True
    await cancellation.request_cancel_workflow(ctx, _cancel(request_id="other"))
    refused = ctx.replies[-1]
    assert refused["ok"] is False and refused["error_type"] == "WorkflowNotFound"
    assert refused["run_id"] == s.run_id
    assert refused["error_message"] == f"workflow 'wf' run {s.run_id} is already closed (Canceled): nothing to cancel"
    await cancellation.request_cancel_workflow(ctx, _cancel(workflow_id="nobody"))
    assert ctx.replies[-1]["error_type"] == "WorkflowNotFound"
    assert ctx.replies[-1]["error_message"] == "workflow 'nobody' has no run to cancel"


# This history's refusal, and an older history's (a rolling upgrade): both are the same 404.
@pytest.mark.parametrize("error_type", ["WorkflowNotFound", "WorkflowAlreadyClosed"])
async def test_the_frontend_answers_a_closed_run_s_cancel_404_from_either_history(error_type: str) -> None:
    ctx = MemoryContext()
    await _canceled(ctx)
    await cancellation.request_cancel_workflow(ctx, _cancel(request_id="other"))
    reply = ctx.replies[-1] | {"error_type": error_type}

    async def command(name: str, record: dict[str, Any]) -> dict[str, Any]:
        return _answered(name, reply)

    view = SimpleNamespace(_command=command)
    with pytest.raises(WorkflowNotFound, match=r"already closed \(Canceled\): nothing to cancel") as refused:
        await FrontendEngine.cancel(view, "ns", "wf", None, "stop", "other", "me")  # type: ignore[arg-type]
    assert refused.value.status == 404 and refused.value.field == "workflow_id"


async def test_cancel_workflow_over_unseen_inputs_is_refused_like_any_closing_task() -> None:
    ctx = MemoryContext()
    s = await _running(ctx)
    await cancellation.request_cancel_workflow(ctx, _cancel())
    sid = s.wt.scheduled_event_id if s.wt else 0
    await engine.signal_workflow(ctx, _signal_request())
    await answers.workflow_task_completed(ctx, _ref(s, sid) | {"commands": [
        {"command_type": "CancelWorkflowExecution", "attributes": {"details": None}}]})
    assert s.running and _kinds(ctx, s)[-2:] == ["WorkflowTaskFailed", "WorkflowTaskScheduled"]


async def test_a_scheduled_activity_is_canceled_at_once() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [_activity()])
    (sid,) = (int(k) for k in s.activities)
    await cancellation.request_cancel_workflow(ctx, _cancel())
    wt = s.wt.scheduled_event_id if s.wt else 0
    await answers.workflow_task_completed(ctx, _ref(s, wt) | {"commands": [
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": sid}}]})
    assert _kinds(ctx, s)[-3:] == ["ActivityTaskCancelRequested", "ActivityTaskCanceled", "WorkflowTaskScheduled"]
    canceled = ctx.events(s.run_id)[-2]["attributes"]
    assert canceled["started_event_id"] == 0 and canceled["latest_cancel_requested_event_id"] > sid
    assert not s.activities
    # A worker that picks the task up later finds nothing to start.
    await answers.activity_started(ctx, _ref(s, sid))
    assert "ActivityTaskStarted" not in _kinds(ctx, s)
    assert _rebuilt(ctx, s).dumps() == s.dumps()


async def test_a_started_activity_is_marked_and_its_canceled_answer_is_recorded() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [_activity(heartbeat_timeout_ms=5000)])
    (sid,) = (int(k) for k in s.activities)
    await answers.activity_started(ctx, _ref(s, sid))
    wt_cmd = {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": sid}}
    await cancellation.request_cancel_workflow(ctx, _cancel())
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id if s.wt else 0)
                                         | {"commands": [wt_cmd]})
    assert _kinds(ctx, s)[-1] == "ActivityTaskCancelRequested"
    assert s.activities[str(sid)].cancel_requested_event_id == len(ctx.events(s.run_id))
    await answers.activity_canceled(ctx, _ref(s, sid) | {"details": '["partial"]'})
    # The attempt's start is written only now that it ends the activity, just before its end.
    assert _kinds(ctx, s)[-3:] == ["ActivityTaskStarted", "ActivityTaskCanceled", "WorkflowTaskScheduled"]
    started, canceled = ctx.events(s.run_id)[-3:-1]
    assert started["attributes"]["scheduled_event_id"] == sid and started["attributes"]["attempt"] == 1
    assert canceled["attributes"]["started_event_id"] == started["event_id"]
    assert canceled["attributes"]["details"] == '["partial"]'
    assert not s.activities
    t = ctx.transitions[-1]
    assert {f"{s.run_id}/act_hb/{sid}", f"{s.run_id}/act_stc/{sid}"} <= t.timers_delete
    assert _rebuilt(ctx, s).dumps() == s.dumps()


async def test_a_cancel_request_for_an_activity_that_finished_meanwhile_is_recorded_and_harmless() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [_activity()])
    (sid,) = (int(k) for k in s.activities)
    await cancellation.request_cancel_workflow(ctx, _cancel())
    wt = s.wt.scheduled_event_id if s.wt else 0
    await answers.activity_completed(ctx, _ref(s, sid) | {"result": "1"})
    await answers.workflow_task_completed(ctx, _ref(s, wt) | {"commands": [
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": sid}}]})
    # Every command has its event (a replay matches it); nothing else follows from it.
    assert _kinds(ctx, s)[-2:] == ["ActivityTaskCancelRequested", "WorkflowTaskScheduled"]
    assert _rebuilt(ctx, s).dumps() == s.dumps()


async def test_an_activity_asked_to_cancel_that_fails_is_not_retried() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [_activity()])
    (sid,) = (int(k) for k in s.activities)
    await answers.activity_started(ctx, _ref(s, sid))
    await cancellation.request_cancel_workflow(ctx, _cancel())
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id if s.wt else 0) | {"commands": [
        {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": sid}}]})
    await answers.activity_failed(ctx, _ref(s, sid) | {"failure": {
        "message": "clean-up failed", "type": "RuntimeError", "stack_trace": "", "non_retryable": False,
        "details": None}})
    # The default policy retries forever; a cancel request ends it (Temporal's CancelRequested).
    assert _kinds(ctx, s)[-3:] == ["ActivityTaskStarted", "ActivityTaskFailed", "WorkflowTaskScheduled"]
    assert not s.activities
    assert _rebuilt(ctx, s).dumps() == s.dumps()


async def test_an_activity_canceled_unasked_counts_as_a_failed_attempt() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [_activity()])
    (sid,) = (int(k) for k in s.activities)
    before = _kinds(ctx, s)
    await answers.activity_canceled(ctx, _ref(s, sid) | {"details": None})
    # Retried as the policy says; a retried attempt writes no event, the pending activity
    # keeps the failure.
    assert _kinds(ctx, s) == before
    act = s.activities[str(sid)]
    assert act.attempt == 2 and act.state == "Scheduled"
    assert act.last_failure["type"] == cancellation.UNASKED


@pytest.mark.parametrize("record", ["RespondWorkflowTaskCompleted", "RespondActivityTaskCompleted"])
def test_the_cancel_commands_keep_their_type_through_avro(record: str) -> None:
    # As the frontend's validation passes them on: fields at their default left out.
    commands = [{"command_type": "CancelWorkflowExecution", "attributes": {}},
                {"command_type": "RequestCancelActivityTask", "attributes": {"scheduled_event_id": 5}},
                {"command_type": "CompleteWorkflowExecution", "attributes": {"result": None}}]
    base = {"namespace": "ns", "workflow_id": "wf", "run_id": "r", "scheduled_event_id": 3, "attempt": 1}
    if record == "RespondWorkflowTaskCompleted":
        value = {**base, "commands": commands}
    else:
        value = {**base, "result": "1", "workflow_task": {"ahead_id": 1, "after_ahead_id": 0,
                                                          "after_scheduled_event_id": 2, "after_started_time": 0,
                                                          "started_time": 0, "commands": commands}}
    _, decoded = avro.decode(avro.encode(record, value))
    got = decoded["commands"] if record == "RespondWorkflowTaskCompleted" else decoded["workflow_task"]["commands"]
    assert got == [{**commands[0], "attributes": {"details": None}}, *commands[1:]]


def test_the_encode_cli_writes_a_cancel_record() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kadence.cli", "encode", "cancel", "--workflow-id", "w", "--reason", "done",
         "--request-id", "r-1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    name, record = avro.decode(bytes.fromhex(done.stdout.strip()))
    assert name == "RequestCancelWorkflowExecution"
    assert record == {"namespace": "default", "workflow_id": "w", "run_id": None, "reason": "done",
                      "request_id": "r-1", "identity": "", "reply_to": None}
    assert "key: default/w" in done.stderr


class _Reads:
    """The frontend's ReadStore over one run's state (or none)."""

    def __init__(self, status: str | None, activities: dict[str, Any]) -> None:
        self.status, self.activities = status, activities

    async def execution(self, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
        if self.status is None:
            raise WorkflowNotFound("no such run")
        return Execution(namespace, workflow_id, run_id or "r", "T", "q", self.status, 0, None, 9,
                         {"status": self.status, "activities": self.activities})


@pytest.mark.parametrize(("status", "activities", "told"), [
    ("Running", {"5": {"attempt": 2}}, False),  # the attempt runs on
    ("Running", {"5": {"attempt": 2, "cancel_requested_event_id": 8}}, True),  # its cancel is recorded
    ("Running", {"5": {"attempt": 3}}, True),  # another attempt replaced it
    ("Running", {}, True),  # the activity finished (or was canceled)
    ("Canceled", {"5": {"attempt": 2}}, True),  # the run closed
    (None, {}, True),  # no such run
])
async def test_the_heartbeat_answer_says_whether_the_attempt_should_stop(
        status: str | None, activities: dict[str, Any], told: bool) -> None:
    engine_view = SimpleNamespace(_reads=_Reads(status, activities))
    engine_view._current_attempt = functools.partial(FrontendEngine._current_attempt, engine_view)
    token = TaskToken("ns", "wf", "r", 5, 2, "activity")
    assert await FrontendEngine.activity_cancel_requested(engine_view, token) is told  # type: ignore[arg-type]


async def test_cancelling_a_timer_that_fired_unseen_refuses_the_task_so_that_it_sees_the_firing() -> None:
    ctx = MemoryContext()
    s = await _running(ctx, [{"command_type": "StartTimer", "attributes": {"timer_id": "1",
                                                                          "start_to_fire_timeout_ms": 1000}}])
    await cancellation.request_cancel_workflow(ctx, _cancel())
    sid = s.wt.scheduled_event_id if s.wt else 0
    started = s.timers["1"].started_event_id
    await engine.fire_timer(ctx, engine.TimerFiring(f"{s.run_id}/user_timer/1", 0, "ns", "wf", s.run_id,
                                                    "user_timer", started, 0))
    assert _kinds(ctx, s)[-1] == "TimerFired"  # after the task was scheduled: unseen by it
    # The workflow ignores the cancel and goes on: its sleep's timer is cancelled, an activity scheduled.
    await answers.workflow_task_completed(ctx, _ref(s, sid) | {"commands": [
        {"command_type": "CancelTimer", "attributes": {"timer_id": "1"}}, _activity()]})
    assert _kinds(ctx, s)[-3:] == ["WorkflowTaskStarted", "WorkflowTaskFailed", "WorkflowTaskScheduled"]
    assert ctx.events(s.run_id)[-2]["attributes"]["cause"] == "UnhandledCommand"
    assert not s.activities
