"""Temporal semantics of the history engine, without I/O: the execution timeout covers the
whole continue-as-new chain and the run timeout one run; heartbeat details reach the next
attempt after any failure; retried attempts write no history, only the final one does."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from kadence import activity, workflow
from kadence._activity import ActivityDefinition
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence.exceptions import ActivityError, ActivityTimeoutError
from kadence_protocol import avro
from services.history import engine
from services.history.audit import replay as audit
from services.history.builder import Transition
from services.history.context import BatchContext
from services.history.state import ATTEMPT_FIELDS, MutableState, apply, events_only, rebuild
from tests.unit import _answers as answers
from tests.unit._fake_history import Driver, FakeHistory
from tests.unit.kadence._worker.test_worker import FakeTransport, _activity_task
from tests.unit.services.history.test_state import MemoryContext, _ref, _start

pytestmark = pytest.mark.timeout(10)
T0 = 1_700_000_000_000


class Context(MemoryContext):
    """MemoryContext that keeps heartbeats as the shard does (latest per activity)."""

    def __init__(self) -> None:
        super().__init__()
        self.beats: dict[tuple[str, int], tuple[int, str | None]] = {}

    def last_heartbeat(self, run_id: str, scheduled_event_id: int) -> tuple[int, str | None] | None:  # type: ignore[override]
        return self.beats.get((run_id, scheduled_event_id))

    def record_heartbeat(self, run_id: str, scheduled_event_id: int, attempt: int, details: str | None) -> None:  # type: ignore[override]
        self.beats[(run_id, scheduled_event_id)] = (self.now, details)

    def timers(self, run_id: str) -> dict[str, int]:
        """The run's armed timers by key: their fire times, as the transitions left them."""
        armed: dict[str, int] = {}
        for t in self.transitions:
            if t.state.run_id != run_id:
                continue
            for key in t.timers_delete:
                armed.pop(key, None)
            for row in t.timers_upsert.values():
                armed[row[0]] = row[1]
        return armed


def _continue_as_new() -> dict[str, Any]:
    return {"command_type": "ContinueAsNewWorkflowExecution",
            "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}


async def _continue(ctx: Context, s: MutableState) -> MutableState:
    assert s.wt is not None
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id) | {"commands": [_continue_as_new()]})
    assert s.status == "ContinuedAsNew" and s.new_run_id is not None
    return ctx.runs[s.new_run_id]


async def _fire(ctx: Context, s: MutableState, kind: str, ref: int = 0, attempt: int = 0, name: str = "") -> None:
    key = f"{s.run_id}/{kind}/{name or ref}"
    await engine.fire_timer(ctx, engine.TimerFiring(key, ctx.now, s.namespace, s.workflow_id, s.run_id, kind, ref,
                                                    attempt))


# ---- execution and run timeouts ---------------------------------------------------------


async def test_the_execution_timeout_covers_the_whole_continue_as_new_chain() -> None:
    ctx = Context()
    await engine.start_workflow(ctx, _start(execution_timeout_ms=1000))
    first = next(iter(ctx.runs.values()))
    assert first.execution_expiration_time == T0 + 1000
    assert ctx.timers(first.run_id) == {f"{first.run_id}/wf_timeout/0": T0 + 1000}
    ctx.now += 400
    second = await _continue(ctx, first)
    started = ctx.events(second.run_id)[0]["attributes"]
    assert started["execution_timeout_ms"] == 1000 and started["execution_expiration_time"] == T0 + 1000
    # The new run times out when the chain does, not a full timeout after its own start.
    assert ctx.timers(second.run_id) == {f"{second.run_id}/wf_timeout/0": T0 + 1000}
    ctx.now += 400
    third = await _continue(ctx, second)
    assert ctx.timers(third.run_id) == {f"{third.run_id}/wf_timeout/0": T0 + 1000}
    ctx.now = T0 + 1000
    await _fire(ctx, third, "wf_timeout")
    assert third.status == "TimedOut"
    assert ctx.events(third.run_id)[-1]["event_type"] == "WorkflowExecutionTimedOut"


async def test_the_run_timeout_applies_to_each_run_and_the_earlier_deadline_wins() -> None:
    ctx = Context()
    await engine.start_workflow(ctx, _start(run_timeout_ms=300, execution_timeout_ms=1000))
    first = next(iter(ctx.runs.values()))
    assert ctx.timers(first.run_id) == {f"{first.run_id}/wf_timeout/0": T0 + 300}
    ctx.now += 200
    second = await _continue(ctx, first)
    assert second.run_timeout_ms == 300
    assert ctx.timers(second.run_id) == {f"{second.run_id}/wf_timeout/0": T0 + 500}
    ctx.now += 600
    third = await _continue(ctx, second)  # at T0 + 800: the chain's 1000 comes before 800 + 300
    assert ctx.timers(third.run_id) == {f"{third.run_id}/wf_timeout/0": T0 + 1000}


async def test_a_run_timeout_alone_times_out_one_run() -> None:
    ctx = Context()
    await engine.start_workflow(ctx, _start(run_timeout_ms=300))
    s = next(iter(ctx.runs.values()))
    assert s.execution_expiration_time == 0 and s.timeout_at() == T0 + 300
    ctx.now += 300
    await _fire(ctx, s, "wf_timeout")
    assert s.status == "TimedOut"


def test_a_start_event_from_before_expiration_times_expires_after_its_own_timeout() -> None:
    s = MutableState(run_id="old")
    apply(s, {"event_id": 1, "event_time": 5000, "event_type": "WorkflowExecutionStarted", "attributes": {
        "workflow_type": "T", "task_queue": "q", "input": None, "execution_timeout_ms": 700,
        "workflow_task_timeout_ms": 10000, "request_id": "", "identity": "", "continued_execution_run_id": None,
        "attempt": 1}})
    assert s.execution_expiration_time == 5700 and s.run_timeout_ms == 0 and s.timeout_at() == 5700


# ---- activity attempts ----------------------------------------------------------------------


def _schedule(policy: dict[str, Any] | None = None, heartbeat_ms: int = 0) -> dict[str, Any]:
    return {"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[]",
        "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 60_000,
        "heartbeat_timeout_ms": heartbeat_ms, "retry_policy": policy}}


async def _with_activity(ctx: Context, **kw: Any) -> tuple[MutableState, int]:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [_schedule(**kw)]})
    (sid,) = (int(k) for k in s.activities)
    return s, sid


def _failure(n: int) -> dict[str, Any]:
    return {"message": f"boom {n}", "type": "ValueError", "stack_trace": "", "non_retryable": False, "details": None}


def _dispatched(ctx: Context, s: MutableState) -> list[dict[str, Any]]:
    """The activity tasks published for the run, decoded, in order."""
    return [avro.decode(m.value)[1] for t in ctx.transitions if t.state.run_id == s.run_id for m in t.outbox
            if avro.decode(m.value)[0] == "ActivityTask"]


async def test_retried_attempts_write_no_history_and_the_final_one_writes_its_start() -> None:
    ctx = Context()
    s, sid = await _with_activity(ctx, policy={"initial_interval_ms": 10, "backoff_coefficient": 1.0,
                                               "maximum_interval_ms": 0, "maximum_attempts": 0,
                                               "non_retryable_error_types": []})
    before = len(ctx.events(s.run_id))
    for attempt in range(1, 21):
        await answers.activity_started(ctx, _ref(s, sid, attempt) | {"identity": f"w{attempt}"})
        await answers.activity_failed(ctx, _ref(s, sid, attempt) | {"failure": _failure(attempt),
                                                                    "identity": f"w{attempt}"})
        act = s.activities[str(sid)]
        assert (act.attempt, act.state, act.last_failure["message"]) == (attempt + 1, "Scheduled",
                                                                                  f"boom {attempt}")
        assert act.last_worker_identity == f"w{attempt}"
        assert any(t.changed_without_events for t in ctx.transitions[-2:])
        ctx.now += 10
        await _fire(ctx, s, "act_retry", sid, attempt + 1)
    assert len(ctx.events(s.run_id)) == before  # twenty failed attempts, no event
    assert [task["attempt"] for task in _dispatched(ctx, s)] == list(range(1, 22))
    await answers.activity_completed(ctx, _ref(s, sid, 21) | {"result": '"ok"', "identity": "w21"})
    new = ctx.events(s.run_id)[before:]
    assert [e["event_type"] for e in new] == ["ActivityTaskStarted", "ActivityTaskCompleted", "WorkflowTaskScheduled"]
    started = new[0]["attributes"]
    assert started["attempt"] == 21 and started["identity"] == "w21"
    assert started["last_failure"]["message"] == "boom 20"
    assert new[1]["attributes"]["started_event_id"] == new[0]["event_id"]
    assert not s.activities
    # The fold of the events through Avro gives the live state exactly once the activity is closed.
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()


async def test_an_answer_for_an_attempt_still_waiting_out_its_backoff_is_dropped() -> None:
    # No worker was handed it: an answer (an async completion's by ids, looked up during the
    # backoff) is stale; once the attempt is due, its answer is taken.
    ctx = Context()
    s, sid = await _with_activity(ctx, policy={"initial_interval_ms": 5_000, "backoff_coefficient": 1.0,
                                               "maximum_interval_ms": 0, "maximum_attempts": 0,
                                               "non_retryable_error_types": []})
    await answers.activity_failed(ctx, _ref(s, sid, 1) | {"failure": _failure(1), "identity": "outside"})
    before = len(ctx.events(s.run_id))
    await answers.activity_heartbeat(ctx, _ref(s, sid, 2) | {"details": None, "identity": "outside"})
    await answers.activity_completed(ctx, _ref(s, sid, 2) | {"result": '"early"', "identity": "outside"})
    assert len(ctx.events(s.run_id)) == before and s.activities[str(sid)].state == "Scheduled"
    ctx.now += 5_000
    await _fire(ctx, s, "act_retry", sid, 2)
    await answers.activity_completed(ctx, _ref(s, sid, 2) | {"result": '"due"', "identity": "outside"})
    assert [e["event_type"] for e in ctx.events(s.run_id)[before:]][-2] == "ActivityTaskCompleted"
    assert not s.activities


async def test_while_attempts_retry_the_fold_agrees_on_all_but_the_attempt_fields() -> None:
    ctx = Context()
    s, sid = await _with_activity(ctx)
    await answers.activity_failed(ctx, _ref(s, sid) | {"failure": _failure(1)})  # implies the start
    events = ctx.events(s.run_id)
    folded = rebuild("ns", "wf", s.run_id, events)
    assert folded.dumps() != s.dumps()
    assert events_only(json.loads(folded.dumps())) == events_only(json.loads(s.dumps()))
    mine, theirs = dataclasses.asdict(s.activities[str(sid)]), dataclasses.asdict(folded.activities[str(sid)])
    differing = {k for k in mine if mine[k] != theirs[k]}
    assert differing and differing <= ATTEMPT_FIELDS
    # The audit compares the snapshot with its replay of the log on the same terms.
    run = audit.RunAudit(audit.RunKey("ns", "wf", s.run_id))
    rows = [avro.encode("HistoryEvent", e) for e in events]
    for e in events:
        run.add(e)
    assert audit.compare_run(run, rows, s.dumps()) == []
    tampered = s.clone()
    tampered.activities[str(sid)].activity_type = "other"
    assert [d.kind for d in audit.compare_run(run, rows, tampered.dumps())] == [audit.STATE_MISMATCH]


async def test_a_final_failure_writes_the_started_and_failed_events_of_the_last_attempt() -> None:
    ctx = Context()
    policy = {"initial_interval_ms": 10, "backoff_coefficient": 1.0, "maximum_interval_ms": 0, "maximum_attempts": 2,
              "non_retryable_error_types": []}
    s, sid = await _with_activity(ctx, policy=policy)
    before = len(ctx.events(s.run_id))
    await answers.activity_failed(ctx, _ref(s, sid, 1) | {"failure": _failure(1)})
    ctx.now += 10
    await _fire(ctx, s, "act_retry", sid, 2)
    await answers.activity_failed(ctx, _ref(s, sid, 2) | {"failure": _failure(2)})
    new = ctx.events(s.run_id)[before:]
    assert [e["event_type"] for e in new] == ["ActivityTaskStarted", "ActivityTaskFailed", "WorkflowTaskScheduled"]
    assert new[0]["attributes"]["attempt"] == 2 and new[0]["attributes"]["last_failure"]["message"] == "boom 1"
    assert new[1]["attributes"]["failure"]["message"] == "boom 2"
    assert new[1]["attributes"]["retry_backoff_ms"] is None


async def test_a_retried_timeout_writes_no_event_and_a_schedule_to_start_timeout_no_start() -> None:
    ctx = Context()
    s, sid = await _with_activity(ctx)
    before = len(ctx.events(s.run_id))
    await answers.activity_started(ctx, _ref(s, sid, 1))
    ctx.now += 60_000
    await _fire(ctx, s, "act_stc", sid, 1)
    act = s.activities[str(sid)]
    assert act.attempt == 2 and act.last_failure["type"] == "TimeoutError"
    assert len(ctx.events(s.run_id)) == before


@pytest.mark.parametrize("ending", ["failed", "start_to_close", "heartbeat"])
async def test_heartbeat_details_reach_the_next_attempt_after_any_failure(ending: str) -> None:
    ctx = Context()
    s, sid = await _with_activity(ctx, heartbeat_ms=1000)
    await answers.activity_heartbeat(ctx, _ref(s, sid) | {"details": '["halfway"]'})
    if ending == "failed":
        await answers.activity_failed(ctx, _ref(s, sid) | {"failure": _failure(1)})
    else:
        ctx.now += 60_000
        await _fire(ctx, s, "act_stc" if ending == "start_to_close" else "act_hb", sid, 1)
    assert s.activities[str(sid)].heartbeat_details == '["halfway"]'
    ctx.now += 10_000
    await _fire(ctx, s, "act_retry", sid, 2)
    assert _dispatched(ctx, s)[-1]["attempt"] == 2
    assert _dispatched(ctx, s)[-1]["heartbeat_details"] == '["halfway"]'


async def test_a_failure_carries_details_never_sent_as_a_heartbeat() -> None:
    ctx = Context()
    s, sid = await _with_activity(ctx)
    await answers.activity_failed(ctx, _ref(s, sid) | {"failure": _failure(1), "last_heartbeat_details": '[3]'})
    assert s.activities[str(sid)].heartbeat_details == '[3]'



async def test_timeouts_too_far_out_for_a_timer_arm_none() -> None:
    ctx = Context()
    await engine.start_workflow(ctx, _start(execution_timeout_ms=2**63 - 1, run_timeout_ms=2**63 - 1))
    s = next(iter(ctx.runs.values()))
    assert s.execution_expiration_time == engine.NEVER_MS
    assert ctx.timers(s.run_id) == {}
    for event in ctx.events(s.run_id):
        avro.encode("HistoryEvent", event)  # every value fits the schema's longs


async def test_a_final_timeout_names_the_failure_of_the_attempt_before() -> None:
    ctx = Context()
    policy = {"initial_interval_ms": 5000, "backoff_coefficient": 1.0, "maximum_interval_ms": 0,
              "maximum_attempts": 0, "non_retryable_error_types": []}
    s, sid = await _with_activity(ctx, policy=policy)
    s.activities[str(sid)].schedule_to_close_timeout_ms = 10_000  # set as the command would have
    await answers.activity_failed(ctx, _ref(s, sid) | {"failure": _failure(1)})
    ctx.now += 10_000  # the schedule-to-close timeout ends it while it waits for attempt 2
    await _fire(ctx, s, "act_s2c", sid)
    timed_out = ctx.events(s.run_id)[-2]
    assert timed_out["event_type"] == "ActivityTaskTimedOut"
    assert timed_out["attributes"]["started_event_id"] == 0  # attempt 2 never started
    assert timed_out["attributes"]["last_failure"]["message"] == "boom 1"


@workflow.defn
class CatchTimeout:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_activity("a", start_to_close_timeout=timedelta(seconds=1))
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ActivityTimeoutError)
            return f"{cause.timeout_type} after {cause.__cause__}"
        return "no"


def test_workflow_code_sees_the_last_failure_behind_a_timeout() -> None:
    history = FakeHistory("CatchTimeout")
    driver = Driver(CatchTimeout, history)
    driver.step()
    scheduled = history.activity_scheduled_id("1")
    history.add("ActivityTaskTimedOut", scheduled_event_id=scheduled, started_event_id=0,
                timeout_type="ScheduleToClose", last_heartbeat_details=None, retry_backoff_ms=None,
                last_failure=_failure(1))
    commands = driver.next_task()
    assert json.loads(commands[0]["attributes"]["result"]) == "ScheduleToClose after boom 1"


@activity.defn(name="beat_and_raise")
async def _beat_and_raise(beat: bool) -> None:
    if beat:
        activity.heartbeat("halfway", 50)
    raise RuntimeError("no")


async def test_the_worker_sends_the_last_recorded_heartbeat_details_with_a_failure() -> None:
    transport = FakeTransport()
    processor = ActivityTaskProcessor(transport, namespace="default", task_queue="tq",
                                      activities=[ActivityDefinition.of(_beat_and_raise)], identity="test",
                                      executor=None)  # type: ignore[arg-type]
    await processor.process(_activity_task("beat_and_raise", True))
    await processor.process(_activity_task("beat_and_raise", False))
    failed = transport.posted("/activity-tasks/fail")
    # The heartbeat itself never went out (the attempt ended first): the failure carries it.
    assert json.loads(failed[0]["last_heartbeat_details"]) == ["halfway", 50]
    assert "last_heartbeat_details" not in failed[1]


def test_a_transition_that_changed_only_attempt_fields_is_committed() -> None:
    ctx = BatchContext(None, T0, began=0.0)  # type: ignore[arg-type]  # close() needs no shard
    untouched = Transition(MutableState(run_id="a", status="Running"), T0, 0)
    changed = Transition(MutableState(run_id="b", status="Running"), T0, 0)
    changed.changed_without_events = True
    ctx.transitions = {"a": untouched, "b": changed}
    assert [m.state.run_id for m in ctx.close()] == ["b"]
