"""The fold and the state machine, without I/O: engine operations on in-memory runs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kadence_protocol import avro, records
from services.common import kafka
from services.history import engine
from services.history.builder import Transition
from services.history.errors import HistoryCorrupted
from services.history.state import ActivityInfo, MutableState, apply, rebuild
from tests.unit import _answers as answers

pytestmark = pytest.mark.timeout(10)


class MemoryContext:
    """engine.Context over a dict of runs: the shard loop's contract, minus PostgreSQL."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000
        self.runs: dict[str, MutableState] = {}
        self.current: dict[tuple[str, str], str] = {}
        self.transitions: list[Transition] = []
        self.replies: list[dict[str, Any]] = []
        # hold_timer: whether the shard has requests on hand it has not taken, and the
        # firings held back (with the time their re-checks end and their guard).
        self.requests_on_hand = False
        self.held: list[tuple[engine.TimerFiring, int, int]] = []
        self.rows_deleted: list[str] = []
        # send: what a batch publishes for no run in particular, as the broker would hold it.
        self.sent: list[tuple[bytes, str, dict[str, Any]]] = []

    def _t(self, state: MutableState) -> Transition:
        t = Transition(state, self.now, 0)
        self.transitions.append(t)
        return t

    async def current_run(self, namespace: str, workflow_id: str) -> Transition | None:
        run_id = self.current.get((namespace, workflow_id))
        return None if run_id is None else self._t(self.runs[run_id])

    async def run(self, namespace: str, workflow_id: str, run_id: str) -> Transition | None:
        return self._t(self.runs[run_id]) if run_id in self.runs else None

    def new_run(self, state: MutableState) -> Transition:
        self.runs[state.run_id] = state
        self.current[(state.namespace, state.workflow_id)] = state.run_id
        return self._t(state)

    def reply(self, command: dict[str, Any], **kw: Any) -> None:
        self.replies.append(kw)

    def delete_timer_row(self, key: str) -> None:
        self.rows_deleted.append(key)

    def hold_timer(self, timer: engine.TimerFiring, recheck_until_ms: int, guard_ms: int) -> bool:
        if self.requests_on_hand:
            self.held.append((timer, recheck_until_ms, guard_ms))
        return self.requests_on_hand

    def send(self, topic: str, key: bytes, record_name: str, record: dict[str, Any]) -> None:
        assert topic == kafka.REQUESTS
        self.sent.append((key, record_name, avro.decode(avro.encode(record_name, record))[1]))

    def last_heartbeat(self, run_id: str, scheduled_event_id: int) -> None:
        return None

    def record_heartbeat(self, *args: Any) -> None:
        pass

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [e for t in self.transitions if t.state.run_id == run_id for e in t.events]


def _start(wid: str = "wf", **kw: Any) -> records.StartWorkflowExecution:
    return records.StartWorkflowExecution.from_dict({
        "namespace": "ns", "workflow_id": wid, "workflow_type": "T", "task_queue": "q", "input": "[]",
        "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000, "request_id": "r1", "identity": "",
        "reply_to": None, **kw})


def _signal_request(**kw: Any) -> records.SignalWorkflowExecution:
    return records.SignalWorkflowExecution.from_dict({
        "namespace": "ns", "workflow_id": "wf", "run_id": None, "signal_name": "go", "input": "[]", "request_id": "",
        "identity": "", "reply_to": None, **kw})


def _terminate(wid: str = "wf", **kw: Any) -> records.TerminateWorkflowExecution:
    return records.TerminateWorkflowExecution.from_dict({
        "namespace": "ns", "workflow_id": wid, "run_id": None, "reason": "r", "request_id": "", "identity": "",
        "reply_to": None, **kw})


def _ref(s: MutableState, sid: int, attempt: int = 1) -> dict[str, Any]:
    return {"namespace": "ns", "workflow_id": s.workflow_id, "run_id": s.run_id, "scheduled_event_id": sid,
            "attempt": attempt, "identity": "w"}


async def test_start_schedules_a_workflow_task_and_dispatches_it() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    (run_id,) = ctx.runs
    assert [e["event_type"] for e in ctx.events(run_id)] == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    t = ctx.transitions[0]
    assert [avro.decode(m.value)[0] for m in t.outbox] == ["WorkflowTask"]
    assert ctx.replies == [{"ok": True, "run_id": run_id, "created": True}]


async def test_inputs_during_a_workflow_task_schedule_another_after_it() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_started(ctx, _ref(s, 2))
    await engine.signal_workflow(ctx, _signal_request())
    assert s.wt is not None and s.wt.scheduled_event_id == 2  # no second task while one is outstanding
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": []})
    kinds = [e["event_type"] for e in ctx.events(s.run_id)]
    assert kinds[-3:] == ["WorkflowExecutionSignaled", "WorkflowTaskCompleted", "WorkflowTaskScheduled"]


async def test_stale_and_duplicate_answers_change_nothing() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    before = s.dumps()
    await answers.workflow_task_completed(ctx, _ref(s, 99) | {"commands": []})
    await answers.workflow_task_completed(ctx, _ref(s, 2, attempt=2) | {"commands": []})
    assert s.dumps() == before


async def test_the_start_records_the_time_the_worker_was_given_and_only_that_start_answers() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_started(ctx, _ref(s, 2) | {"started_time": 1_700_000_000_777})
    started = ctx.events(s.run_id)[-1]
    assert started["event_type"] == "WorkflowTaskStarted"
    assert started["attributes"]["started_time"] == 1_700_000_000_777
    # The same task handed out a second time: its worker ran at another time, so its answer is stale.
    before = s.dumps()
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [], "started_time": 1_700_000_000_999})
    assert s.dumps() == before
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [], "started_time": 1_700_000_000_777})
    assert ctx.events(s.run_id)[-1]["event_type"] == "WorkflowTaskCompleted"


async def test_an_answer_that_overtakes_its_started_record_records_the_start_it_names() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [], "started_time": 1_700_000_000_555})
    kinds = [(e["event_type"], (e["attributes"] or {}).get("started_time")) for e in ctx.events(s.run_id)]
    assert ("WorkflowTaskStarted", 1_700_000_000_555) in kinds
    assert kinds[-1][0] == "WorkflowTaskCompleted"


async def test_signal_request_id_dedupes() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    sig = _signal_request(request_id="sig-1")
    await engine.signal_workflow(ctx, sig)
    await engine.signal_workflow(ctx, sig)
    assert [e["event_type"] for e in ctx.events(s.run_id)].count("WorkflowExecutionSignaled") == 1


async def test_bad_command_fails_the_workflow_task_not_the_workflow() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    bad = {"command_type": "ScheduleActivityTask", "attributes": {
        "activity_id": "1", "activity_type": "a", "task_queue": "", "input": None, "schedule_to_close_timeout_ms": 0,
        "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 0, "heartbeat_timeout_ms": 0,
        "retry_policy": None}}
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [bad]})
    failed = next(e for e in ctx.events(s.run_id) if e["event_type"] == "WorkflowTaskFailed")
    assert "start_to_close_timeout" in failed["attributes"]["failure"]["message"]
    assert s.running and s.wt is not None and s.wt.attempt == 2


def activity_info(**fields: Any) -> ActivityInfo:
    """A pending activity with the given fields, zero or empty elsewhere."""
    base: dict[str, Any] = {
        "activity_id": "1", "activity_type": "a", "task_queue": "q", "input": None, "schedule_to_close_timeout_ms": 0,
        "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 0, "heartbeat_timeout_ms": 0,
        "retry_policy": None, "first_scheduled_time": 0, "scheduled_time": 0}
    return ActivityInfo(**(base | fields))


def test_retry_backoff_follows_the_policy() -> None:
    act = activity_info(retry_policy={"initial_interval_ms": 100, "backoff_coefficient": 3.0,
                                      "maximum_interval_ms": 500, "maximum_attempts": 4,
                                      "non_retryable_error_types": ["Fatal"]})
    assert [engine.retry_backoff(replace(act, attempt=n), 0, "E", False) for n in (1, 2, 3, 4)] == [100, 300, 500, None]
    assert engine.retry_backoff(act, 0, "Fatal", False) is None
    assert engine.retry_backoff(act, 0, "E", True) is None
    assert engine.retry_backoff(replace(act, schedule_to_close_timeout_ms=1000), 950, "E", False) is None


def test_retry_backoff_of_an_activity_retried_thousands_of_times_stays_at_the_ceiling() -> None:
    # 2.0 ** 1100 overflows a float: the interval must stay at its ceiling, not raise.
    act = activity_info(retry_policy={"initial_interval_ms": 1000, "backoff_coefficient": 2.0,
                                      "maximum_interval_ms": 60_000, "maximum_attempts": 0,
                                      "non_retryable_error_types": []}, attempt=1100)
    assert engine.retry_backoff(act, 0, "E", False) == 60_000


async def test_live_state_equals_the_fold_of_its_events_through_avro() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start(execution_timeout_ms=60_000))
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [
        {"command_type": "StartTimer", "attributes": {"timer_id": "t", "start_to_fire_timeout_ms": 5}},
        {"command_type": "ScheduleActivityTask", "attributes": {
            "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[1]",
            "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0, "start_to_close_timeout_ms": 9,
            "heartbeat_timeout_ms": 0, "retry_policy": None}}]})
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()


def test_a_gap_in_event_ids_is_refused() -> None:
    s = MutableState(run_id="r")
    with pytest.raises(HistoryCorrupted, match="expected 1"):
        apply(s, {"event_id": 2, "event_time": 0, "event_type": "MarkerRecorded", "attributes": {}})


def test_a_workflow_task_carries_its_events_only_when_the_tail_is_whole() -> None:
    state = MutableState(namespace="default", workflow_id="w", run_id="r", workflow_type="T", task_queue="q")
    first = Transition(state, 1_700_000_000_000, 0, tail=[])
    first.add("WorkflowExecutionStarted", workflow_type="T", task_queue="q", input=None,
              execution_timeout_ms=0, workflow_task_timeout_ms=10_000)
    first.add("WorkflowTaskScheduled", task_queue="q", start_to_close_timeout_ms=10_000, attempt=1)
    carried = first._carried(1, 2)
    assert carried is not None and [data for _, data, _ in carried] == first.encoded
    # The events handed over in process as dicts are exactly what their encodings decode to.
    assert [event for _, _, event in carried] == [avro.decode(data)[1] for data in first.encoded]

    tail = list(zip((e["event_id"] for e in first.events), first.encoded, first.events, strict=True))
    # A tail that lost its first event (a run reloaded from the store) carries nothing.
    assert Transition(state, 0, 0, tail=tail[1:])._carried(1, 2) is None
    assert Transition(state, 0, 0, tail=None)._carried(1, 2) is None
    second = Transition(state, 0, 0, tail=tail)._carried(2, 2)
    assert second is not None and [data for _, data, _ in second] == first.encoded[1:]


async def test_a_terminated_run_keeps_its_reason_and_a_rebuild_agrees() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    assert s.terminate_reason is None
    await engine.terminate_workflow(ctx, _terminate(reason="stuck on order 42"))
    assert s.status == "Terminated" and s.terminate_reason == "stuck on order 42"
    assert s.outcome_fields()["terminate_reason"] == "stuck on order 42"
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()
