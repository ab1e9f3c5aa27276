"""Start policies, memo and history limits in history, without I/O: the engine's start over
in-memory runs (tests/unit/services/history/test_state.py's MemoryContext), the fold's history size, and the
validation of the new fields."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kadence_protocol import avro
from services.common import validation
from services.common.config import Settings
from services.history import engine
from services.history.builder import Transition
from services.history.limits import HistoryLimits, limits_of
from services.history.state import MutableState, rebuild
from tests.unit.services.history.test_state import MemoryContext, _ref, _signal_request, _start, _terminate

pytestmark = pytest.mark.timeout(10)


class LimitedContext(MemoryContext):
    def __init__(self, limits: HistoryLimits) -> None:
        super().__init__()
        self.limits = limits

    def _t(self, state: MutableState) -> Transition:
        t = Transition(state, self.now, 0, history_limits=self.limits)
        self.transitions.append(t)
        return t


def _current(ctx: MemoryContext, wid: str = "wf") -> MutableState:
    return ctx.runs[ctx.current[("ns", wid)]]


async def _closed(ctx: MemoryContext, command: dict[str, Any]) -> MutableState:
    """A run of "wf" closed by ``command`` of its first workflow task."""
    await engine.start_workflow(ctx, _start())
    s = _current(ctx)
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [command]})
    assert not s.running
    return s


COMPLETE = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}
FAIL = {"command_type": "FailWorkflowExecution", "attributes": {"failure": {
    "message": "no", "type": "E", "stack_trace": "", "non_retryable": True, "details": None}}}


async def test_by_default_a_running_id_is_refused_and_a_closed_one_reused() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = _current(ctx)
    await engine.start_workflow(ctx, _start(request_id="r2"))
    assert ctx.replies[-1]["error_type"] == "WorkflowAlreadyStarted" and _current(ctx) is first
    await engine.start_workflow(ctx, _start())  # the same request again: its run
    assert ctx.replies[-1] == {"ok": True, "run_id": first.run_id}


async def test_use_existing_answers_with_the_running_run() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = _current(ctx)
    await engine.start_workflow(ctx, _start(request_id="r2", id_conflict_policy="UseExisting"))
    assert ctx.replies[-1] == {"ok": True, "run_id": first.run_id}
    assert first.running and len(ctx.runs) == 1


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("id_conflict_policy", "TerminateExisting", "terminated by a new start (id conflict policy TerminateExisting)"),
    ("id_reuse_policy", "TerminateIfRunning", "terminated by a new start (id reuse policy TerminateIfRunning)"),
])
async def test_terminating_policies_close_the_running_run_and_start_a_new_one(field: str, value: str,
                                                                              reason: str) -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = _current(ctx)
    await engine.start_workflow(ctx, _start(request_id="r2", **{field: value}))
    second = _current(ctx)
    assert first.status == "Terminated" and second.running and second.run_id != first.run_id
    terminated = ctx.events(first.run_id)[-1]
    assert terminated["event_type"] == "WorkflowExecutionTerminated" and terminated["attributes"]["reason"] == reason
    assert ctx.replies[-1] == {"ok": True, "run_id": second.run_id, "created": True}


@pytest.mark.parametrize(("closing", "policy", "allowed"), [
    (COMPLETE, "", True), (COMPLETE, "AllowDuplicate", True), (COMPLETE, "AllowDuplicateFailedOnly", False),
    (FAIL, "AllowDuplicateFailedOnly", True), (COMPLETE, "RejectDuplicate", False), (FAIL, "RejectDuplicate", False),
    (COMPLETE, "TerminateIfRunning", True),
])
async def test_the_reuse_policy_decides_over_a_closed_run(closing: dict[str, Any], policy: str,
                                                          allowed: bool) -> None:
    ctx = MemoryContext()
    first = await _closed(ctx, closing)
    await engine.start_workflow(ctx, _start(request_id="r2", id_reuse_policy=policy))
    if allowed:
        assert _current(ctx).run_id != first.run_id and ctx.replies[-1]["created"]
    else:
        assert _current(ctx) is first and ctx.replies[-1]["error_type"] == "WorkflowAlreadyStarted"
        assert policy in ctx.replies[-1]["error_message"]


async def test_allow_duplicate_failed_only_counts_termination_as_failure() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = _current(ctx)
    await engine.terminate_workflow(ctx, _terminate(reason="x", request_id="t"))
    await engine.start_workflow(ctx, _start(request_id="r2", id_reuse_policy="AllowDuplicateFailedOnly"))
    assert _current(ctx).run_id != first.run_id


async def test_signal_with_start_signals_a_running_run_whatever_the_reuse_policy() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    first = _current(ctx)
    await engine.start_workflow(ctx, _start(request_id="r2", id_reuse_policy="RejectDuplicate"), ("s", None))
    assert ctx.replies[-1] == {"ok": True, "run_id": first.run_id}
    assert ctx.events(first.run_id)[-1]["event_type"] == "WorkflowExecutionSignaled"


async def test_signal_with_start_to_a_running_run_between_tasks_schedules_a_workflow_task() -> None:
    # Before: the signal was recorded but no workflow task was owed, so it went unseen.
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start())
    s = _current(ctx)
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": []})
    await engine.start_workflow(ctx, _start(request_id="r2"), ("s", None))
    assert [e["event_type"] for e in ctx.events(s.run_id)][-2:] == ["WorkflowExecutionSignaled",
                                                                     "WorkflowTaskScheduled"]


async def test_the_memo_is_recorded_kept_and_carried_over_on_continue_as_new() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start(memo='{"owner":"ops"}'))
    s = _current(ctx)
    assert ctx.events(s.run_id)[0]["attributes"]["memo"] == '{"owner":"ops"}' and s.memo == '{"owner":"ops"}'
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [{
        "command_type": "ContinueAsNewWorkflowExecution",
        "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}]})
    assert _current(ctx).run_id != s.run_id and _current(ctx).memo == '{"owner":"ops"}'


def _decoded(ctx: MemoryContext, s: MutableState) -> tuple[list[dict[str, Any]], list[int]]:
    encoded = [data for t in ctx.transitions if t.state.run_id == s.run_id for data in t.encoded]
    return [avro.decode(data)[1] for data in encoded], [len(data) for data in encoded]


async def test_the_fold_adds_up_the_encoded_size_and_a_rebuild_agrees() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start(memo='{"a":1}'))
    s = _current(ctx)
    events, sizes = _decoded(ctx, s)
    assert s.history_size_bytes == sum(sizes) > 0
    assert events[1]["attributes"]["history_size_bytes"] == sizes[0]  # the size before the task
    assert rebuild("ns", "wf", s.run_id, events, sizes).dumps() == s.dumps()
    assert rebuild("ns", "wf", s.run_id, events).dumps() == s.dumps()  # current schema: re-encoded, same


async def test_past_the_warning_threshold_the_workflow_task_suggests_continue_as_new() -> None:
    ctx = LimitedContext(HistoryLimits(warn_events=4, terminate_events=100, warn_bytes=1 << 30,
                                       terminate_bytes=1 << 30))
    await engine.start_workflow(ctx, _start())
    s = _current(ctx)
    assert ctx.events(s.run_id)[1]["attributes"]["suggest_continue_as_new"] is False
    signal = _signal_request(signal_name="s", input=None)
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": []})  # events 3, 4
    await engine.signal_workflow(ctx, signal)  # 5, and the task 6
    assert ctx.events(s.run_id)[-1]["event_type"] == "WorkflowTaskScheduled"
    assert ctx.events(s.run_id)[-1]["attributes"]["suggest_continue_as_new"] is True


@pytest.mark.parametrize("limits", [
    HistoryLimits(warn_events=2, terminate_events=5, warn_bytes=1 << 30, terminate_bytes=1 << 30),
    HistoryLimits(warn_events=100, terminate_events=100, warn_bytes=100, terminate_bytes=600),
])
async def test_past_the_hard_limit_the_run_is_terminated_with_the_reason(limits: HistoryLimits) -> None:
    ctx = LimitedContext(limits)
    await engine.start_workflow(ctx, _start())
    s = _current(ctx)
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": []})
    signal = _signal_request(signal_name="s", input=None)
    for _ in range(10):
        if not s.running:
            break
        await engine.signal_workflow(ctx, signal)
    assert s.status == "Terminated"
    last = ctx.events(s.run_id)[-1]
    assert last["event_type"] == "WorkflowExecutionTerminated"
    reason = last["attributes"]["reason"]
    assert reason.startswith("history limit exceeded: ") and reason.endswith(" bytes")
    events, bytes_ = reason.removeprefix("history limit exceeded: ").removesuffix(" bytes").split(" events / ")
    assert int(events) > limits.terminate_events or int(bytes_) > limits.terminate_bytes


@pytest.mark.parametrize(("field", "value", "message"), [
    ("id_reuse_policy", "Sometimes", "id_reuse_policy must be one of"),
    ("id_conflict_policy", 3, "id_conflict_policy must be one of"),
    ("memo", "[1]", "memo must be JSON text of an object"),
    ("memo", "{", "memo is not valid JSON"),
])
def test_validation_refuses_unknown_policies_and_a_memo_that_is_no_object(field: str, value: Any,
                                                                         message: str) -> None:
    with pytest.raises(validation.Invalid, match=message):
        validation.check_command("StartWorkflowExecution", _start(**{field: value}).to_dict())
    with pytest.raises(validation.Invalid, match=message.split()[0]):
        validation.check_command("SignalWithStartWorkflowExecution",
                                 _start().to_dict() | {"signal_name": "s", "signal_input": None, field: value})


def test_validation_takes_every_policy_name_and_an_object_memo() -> None:
    for reuse in validation.REUSE_POLICIES | {""}:
        for conflict in validation.CONFLICT_POLICIES | {""}:
            validation.check_command("StartWorkflowExecution", _start(
                id_reuse_policy=reuse, id_conflict_policy=conflict, memo='{"k":[1,2]}').to_dict())


async def test_continue_as_new_with_a_memo_replaces_it() -> None:
    ctx = MemoryContext()
    await engine.start_workflow(ctx, _start(memo='{"owner":"ops"}'))
    s = _current(ctx)
    await engine.workflow_task_completed(ctx, _ref(s, 2) | {"commands": [{
        "command_type": "ContinueAsNewWorkflowExecution",
        "attributes": {"workflow_type": "", "task_queue": "", "input": "[]", "memo": '{"owner":"dev"}'}}]})
    assert _current(ctx).memo == '{"owner":"dev"}'
    assert ctx.events(_current(ctx).run_id)[0]["attributes"]["memo"] == '{"owner":"dev"}'


def test_validation_refuses_a_continue_as_new_memo_that_is_no_object() -> None:
    answer = {"namespace": "ns", "workflow_id": "wf", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "", "started_time": 0, "commands": [{
                  "command_type": "ContinueAsNewWorkflowExecution",
                  "attributes": {"workflow_type": "", "task_queue": "", "input": "[]", "memo": "[]"}}]}
    with pytest.raises(validation.Invalid, match=r"memo must be JSON text of an object"):
        validation.check_command("RespondWorkflowTaskCompleted", answer)


def test_the_encode_cli_writes_the_policies_and_memo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kadence.cli", "encode", "start", "--workflow-id", "w", "--workflow-type", "G",
         "--task-queue", "q", "--id-reuse-policy", "RejectDuplicate", "--id-conflict-policy", "UseExisting",
         "--memo", '{"a": 1}'], capture_output=True, text=True, timeout=60, check=True)
    _, record = avro.decode(bytes.fromhex(done.stdout.strip()))
    assert (record["id_reuse_policy"], record["id_conflict_policy"]) == ("RejectDuplicate", "UseExisting")
    assert json.loads(record["memo"]) == {"a": 1}


def test_history_limits_from_the_environment_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_HISTORY_WARN_EVENTS", "5")
    monkeypatch.setenv("KADENCE_HISTORY_TERMINATE_BYTES", "1000")
    limits = limits_of(Settings.from_env())
    assert (limits.warn_events, limits.terminate_events, limits.terminate_bytes) == (5, 50_000, 1000)
    monkeypatch.setenv("KADENCE_HISTORY_TERMINATE_EVENTS", "0")
    with pytest.raises(ValueError, match="KADENCE_HISTORY_TERMINATE_EVENTS must be positive"):
        limits_of(Settings.from_env())
