"""Child workflows in the history engine, without I/O: the parent's commands, the requests
and notices between the shards (as the outbox would publish them), their deduplication,
the parent close policy, signals to a child, and the fold agreeing with the live state."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.common import kafka, validation
from services.history import children, engine
from services.history.shard import HANDLERS
from services.history.state import MutableState, ParentInfo, child_run_id, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start, _terminate

pytestmark = pytest.mark.timeout(10)


class Context(MemoryContext):
    """MemoryContext that hands out, once each, the records a batch sends to kadence.requests."""

    def requests(self) -> list[tuple[bytes, str, dict[str, Any]]]:
        """Every record for kadence.requests so far (from runs' outboxes and the batch), in order;
        taken records are forgotten so each is handled once unless a test repeats it."""
        out = [(m.key, *avro.decode(m.value)) for t in self.transitions for m in t.outbox if m.topic == kafka.REQUESTS]
        for t in self.transitions:
            t.outbox = [m for m in t.outbox if m.topic != kafka.REQUESTS]
        out += self.sent
        self.sent = []
        return out


def _child_command(wid: str = "child-1", policy: str = "Terminate") -> dict[str, Any]:
    return {"command_type": "StartChildWorkflowExecution",
            "attributes": {"workflow_id": wid, "workflow_type": "Child", "task_queue": "", "input": "[7]",
                           "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
                           "parent_close_policy": policy}}


def _events(ctx: Context, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


async def _complete(ctx: Context, s: MutableState, commands: list[dict[str, Any]]) -> None:
    assert s.wt is not None
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id) | {"commands": commands})


async def _deliver(ctx: Context, records: list[tuple[bytes, str, dict[str, Any]]]) -> None:
    """Run requests as the shard would: through their handlers, after the ledger."""
    for key, name, record in records:
        assert key == kafka.workflow_key(record["namespace"], record["workflow_id"])
        validation.check_command(name, record)  # what history sends itself passes its own check
        await HANDLERS[name](ctx, record)


async def _parent_with_child(ctx: Context, policy: str = "Terminate") -> tuple[MutableState, MutableState]:
    await engine.start_workflow(ctx, _start("parent"))
    parent = ctx.runs[ctx.current[("ns", "parent")]]
    await _complete(ctx, parent, [_child_command(policy=policy)])
    (start,) = ctx.requests()
    assert start[1] == "StartChildWorkflowExecution" and start[2]["request_id"] == f"child:{parent.run_id}:5"
    await _deliver(ctx, [start])
    child = ctx.runs[ctx.current[("ns", "child-1")]]
    assert child.run_id == child_run_id(parent.run_id, 5)
    assert child.parent == ParentInfo(namespace="ns", workflow_id="parent", run_id=parent.run_id, initiated_event_id=5)
    await _deliver(ctx, ctx.requests())  # the Started notice
    return parent, child


async def test_a_child_starts_completes_and_its_result_reaches_the_parent() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    assert _events(ctx, parent)[-3:] == ["StartChildWorkflowExecutionInitiated", "ChildWorkflowExecutionStarted",
                                         "WorkflowTaskScheduled"]
    assert parent.children["5"].state == "Started"
    await _complete(ctx, child, [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": '"r"'}}])
    (closed,) = ctx.requests()
    assert closed[1] == "ChildWorkflowNotice" and closed[2]["kind"] == "Completed" and closed[2]["result"] == '"r"'
    await _deliver(ctx, [closed, closed])  # a redelivered notice changes nothing
    completed = [e for e in ctx.events(parent.run_id) if e["event_type"] == "ChildWorkflowExecutionCompleted"]
    assert len(completed) == 1 and completed[0]["attributes"]["result"] == '"r"'
    assert parent.children == {}
    for run in (parent, child):
        assert rebuild("ns", run.workflow_id, run.run_id, ctx.events(run.run_id)).dumps() == run.dumps()


async def test_a_failing_child_reports_its_failure() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    failure = {"message": "boom", "type": "Oops", "stack_trace": "", "non_retryable": True, "details": None}
    await _complete(ctx, child, [{"command_type": "FailWorkflowExecution", "attributes": {"failure": failure}}])
    await _deliver(ctx, ctx.requests())
    (event,) = [e for e in ctx.events(parent.run_id) if e["event_type"] == "ChildWorkflowExecutionFailed"]
    assert event["attributes"]["failure"] == failure


async def test_a_child_id_in_use_fails_the_start_and_a_redelivered_start_is_ignored() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    await _complete(ctx, parent, [_child_command()])  # the same workflow id while it runs
    (start,) = ctx.requests()
    await _deliver(ctx, [start])
    (failed,) = ctx.requests()
    assert failed[2]["kind"] == "StartFailed" and failed[2]["cause"] == "WorkflowAlreadyStarted"
    await _deliver(ctx, [failed])
    event = ctx.events(parent.run_id)[-2]
    assert event["event_type"] == "StartChildWorkflowExecutionFailed"
    assert event["attributes"]["cause"] == "WorkflowAlreadyStarted"
    assert list(parent.children) == ["5"]
    # The first start again (the ledger forgot it): the run it names exists, nothing happens.
    before = len(ctx.events(child.run_id))
    await HANDLERS["StartChildWorkflowExecution"](ctx, {**start[2], "new_run_id": child.run_id})
    assert len(ctx.events(child.run_id)) == before and ctx.requests() == []


@pytest.mark.parametrize("policy", ["Terminate", "Abandon", "RequestCancel"])
async def test_the_parent_close_policy_applies_when_the_parent_closes(policy: str) -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx, policy)
    await engine.terminate_workflow(ctx, _terminate("parent"))
    sent = ctx.requests()
    if policy == "Abandon":
        assert sent == [] and child.running
        return
    if policy == "RequestCancel":
        (cancel,) = sent
        assert cancel[1] == "ApplyParentClosePolicy" and cancel[2]["policy"] == "RequestCancel"
        await _deliver(ctx, [cancel, cancel])  # a redelivered copy asks nothing more
        assert child.running and child.cancel_requested
        assert _events(ctx, child).count("WorkflowExecutionCancelRequested") == 1
        assert ctx.requests() == []  # recorded by the child's shard itself: no further record
        assert rebuild("ns", "child-1", child.run_id, ctx.events(child.run_id)).dumps() == child.dumps()
        return
    (terminate,) = sent
    assert terminate[1] == "ApplyParentClosePolicy" and terminate[2]["policy"] == "Terminate"
    await _deliver(ctx, [terminate])
    assert child.status == "Terminated"
    (closed,) = ctx.requests()
    assert closed[2]["kind"] == "Terminated"
    before = len(ctx.events(parent.run_id))
    await _deliver(ctx, [closed])  # the parent has closed: ignored
    assert len(ctx.events(parent.run_id)) == before


async def test_a_child_continued_as_new_keeps_its_parent_and_reports_only_its_end() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    await _complete(ctx, child, [{"command_type": "ContinueAsNewWorkflowExecution",
                                  "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}])
    assert ctx.requests() == []
    assert child.new_run_id is not None
    second = ctx.runs[child.new_run_id]
    assert second.parent == child.parent
    await _complete(ctx, second, [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}])
    (closed,) = ctx.requests()
    assert closed[2]["child_run_id"] == second.run_id
    await _deliver(ctx, [closed])
    assert _events(ctx, parent).count("ChildWorkflowExecutionCompleted") == 1


async def test_a_parent_signals_its_child_and_learns_it_was_delivered() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    signal: dict[str, Any] = {"command_type": "SignalExternalWorkflowExecution",
              "attributes": {"workflow_id": "child-1", "run_id": child.run_id, "signal_name": "go", "input": "[1]",
                             "child_workflow_only": True}}
    await _complete(ctx, parent, [signal])
    (request,) = ctx.requests()
    await _deliver(ctx, [request, request])
    signaled = [e for e in ctx.events(child.run_id) if e["event_type"] == "WorkflowExecutionSignaled"]
    assert len(signaled) == 1 and signaled[0]["attributes"]["input"] == "[1]"
    notices = ctx.requests()
    assert [n[2]["kind"] for n in notices] == ["Signaled", "Signaled"]
    await _deliver(ctx, notices)
    assert _events(ctx, parent).count("ExternalWorkflowExecutionSignaled") == 1 and parent.signals_out == {}
    # A workflow that is not its child refuses: the parent learns the signal failed.
    await _complete(ctx, parent, [{**signal, "attributes": {**signal["attributes"], "workflow_id": "parent",
                                                           "run_id": None}}])
    await _deliver(ctx, ctx.requests())
    failed = ctx.requests()
    assert [n[2]["kind"] for n in failed] == ["SignalFailed"]
    await _deliver(ctx, failed)
    assert _events(ctx, parent)[-2] == "SignalExternalWorkflowExecutionFailed"
    assert rebuild("ns", "parent", parent.run_id, ctx.events(parent.run_id)).dumps() == parent.dumps()


def test_a_child_command_without_a_workflow_id_fails_the_task() -> None:
    from kadence_protocol.records import Command
    from services.history.commands import validate_commands

    bad = Command.from_dict(_child_command(""))
    assert validate_commands([bad]) == "commands[0]: workflow_id is empty"


async def test_a_canceled_child_is_recorded_with_its_details() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    key, record = children._notice("ns", "parent", parent.run_id, 5, children.NoticeKind.CANCELED, "ns", "child-1",
                                   child_run_id=child.run_id, details='["bye"]')
    await _deliver(ctx, [(key, "ChildWorkflowNotice", avro.decode(avro.encode("ChildWorkflowNotice", record))[1])])
    (event,) = [e for e in ctx.events(parent.run_id) if e["event_type"] == "ChildWorkflowExecutionCanceled"]
    assert event["attributes"]["details"] == '["bye"]' and parent.children == {}


def test_the_fold_refuses_an_outcome_for_no_pending_child_or_signal() -> None:
    from services.history.errors import HistoryCorrupted
    from services.history.state import apply

    for kind, attributes in [
        ("ChildWorkflowExecutionCompleted", {"initiated_event_id": 4, "namespace": "ns", "workflow_id": "c",
                                             "run_id": "r", "workflow_type": "T", "started_event_id": 5,
                                             "result": None}),
        ("ExternalWorkflowExecutionSignaled", {"initiated_event_id": 4, "namespace": "ns", "workflow_id": "c",
                                               "run_id": "r"}),
    ]:
        state = MutableState(namespace="ns", workflow_id="wf", run_id="run", next_event_id=7)
        with pytest.raises(HistoryCorrupted, match=r"no (child workflow|signal) 4 is pending"):
            apply(state, {"event_id": 7, "event_time": 1, "event_type": kind, "attributes": attributes})


async def test_the_close_policy_finds_a_child_that_continued_as_new_and_spares_another_run() -> None:
    ctx = Context()
    _, child = await _parent_with_child(ctx)
    await _complete(ctx, child, [{"command_type": "ContinueAsNewWorkflowExecution",
                                  "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}])
    assert child.new_run_id is not None
    second = ctx.runs[child.new_run_id]
    await engine.terminate_workflow(ctx, _terminate("parent"))
    (policy,) = ctx.requests()
    await _deliver(ctx, [policy])
    assert second.status == "Terminated"
    ctx.requests()
    # The same request once the workflow id belongs to a run that is nobody's child: nothing.
    await engine.start_workflow(ctx, _start("child-1", request_id="r2"))
    other = ctx.runs[ctx.current[("ns", "child-1")]]
    await _deliver(ctx, [policy])
    assert other.running


async def test_a_signal_to_a_child_that_continued_as_new_reaches_its_current_run() -> None:
    ctx = Context()
    parent, child = await _parent_with_child(ctx)
    await _complete(ctx, child, [{"command_type": "ContinueAsNewWorkflowExecution",
                                  "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}])
    assert child.new_run_id is not None
    second = ctx.runs[child.new_run_id]
    await _complete(ctx, parent, [{"command_type": "SignalExternalWorkflowExecution",
                                   "attributes": {"workflow_id": "child-1", "run_id": child.run_id,
                                                  "signal_name": "go", "input": "[]", "child_workflow_only": True}}])
    await _deliver(ctx, ctx.requests())
    assert "WorkflowExecutionSignaled" in _events(ctx, second)
    (notice,) = ctx.requests()
    assert notice[2]["kind"] == "Signaled" and notice[2]["child_run_id"] == second.run_id


async def test_a_start_read_again_after_the_child_id_moved_on_starts_nothing() -> None:
    ctx = Context()
    _, child = await _parent_with_child(ctx)
    await engine.terminate_workflow(ctx, _terminate("child-1"))
    await engine.start_workflow(ctx, _start("child-1", request_id="r2"))
    await engine.terminate_workflow(ctx, _terminate("child-1"))
    ctx.requests()
    runs = len(ctx.runs)
    start = {"namespace": "ns", "workflow_id": "child-1", "new_run_id": child.run_id, "workflow_type": "Child",
             "task_queue": "q", "input": "[]", "execution_timeout_ms": 0, "run_timeout_ms": 0,
             "workflow_task_timeout_ms": 0, "request_id": "x", "parent_namespace": "ns",
             "parent_workflow_id": "parent", "parent_run_id": "p", "parent_initiated_event_id": 5}
    await HANDLERS["StartChildWorkflowExecution"](ctx, start)  # the run exists, closed: no second run with its id
    assert len(ctx.runs) == runs and ctx.runs[child.run_id] is child and ctx.requests() == []


async def test_an_external_signal_reaches_a_workflow_that_is_not_the_senders_child_once() -> None:
    ctx = Context()
    for wid in ("sender", "target"):
        await engine.start_workflow(ctx, _start(wid))
    sender, target = (ctx.runs[ctx.current[("ns", wid)]] for wid in ("sender", "target"))
    signal: dict[str, Any] = {"command_type": "SignalExternalWorkflowExecution",
              "attributes": {"workflow_id": "target", "signal_name": "go", "input": "[1]",
                             "child_workflow_only": False}}  # no run_id: the current run
    await _complete(ctx, sender, [signal])
    (request,) = ctx.requests()
    assert request[2]["child_workflow_only"] is False and request[2]["namespace"] == request[2]["sender_namespace"]
    await _deliver(ctx, [request, request])  # a redelivered request is applied once
    signaled = [e for e in ctx.events(target.run_id) if e["event_type"] == "WorkflowExecutionSignaled"]
    assert len(signaled) == 1 and signaled[0]["attributes"]["request_id"] == f"signal:{sender.run_id}:5"
    notices = ctx.requests()
    assert [n[2]["kind"] for n in notices] == ["Signaled", "Signaled"]
    await _deliver(ctx, notices)
    assert _events(ctx, sender).count("ExternalWorkflowExecutionSignaled") == 1 and sender.signals_out == {}
    # The same request with child_workflow_only (a child's handle) refuses a workflow that is not a child.
    await _complete(ctx, sender, [{**signal, "attributes": {**signal["attributes"], "child_workflow_only": True}}])
    await _deliver(ctx, ctx.requests())
    assert [n[2]["kind"] for n in ctx.requests()] == ["SignalFailed"]
    assert rebuild("ns", "sender", sender.run_id, ctx.events(sender.run_id)).dumps() == sender.dumps()


async def test_an_external_signal_to_no_open_run_fails_and_an_external_cancel_is_recorded_once() -> None:
    from kadence_protocol.queries import CANCEL_CHILD_SIGNAL

    ctx = Context()
    for wid in ("sender", "target"):
        await engine.start_workflow(ctx, _start(wid))
    sender, target = (ctx.runs[ctx.current[("ns", wid)]] for wid in ("sender", "target"))
    missing = {"command_type": "SignalExternalWorkflowExecution",
               "attributes": {"workflow_id": "nobody", "signal_name": "go", "input": "[]",
                              "child_workflow_only": False}}
    await _complete(ctx, sender, [missing])
    await _deliver(ctx, ctx.requests())
    (failed,) = ctx.requests()
    assert failed[2]["kind"] == "SignalFailed" and failed[2]["cause"] == "WorkflowNotFound"
    await _deliver(ctx, [failed])
    assert _events(ctx, sender)[-2] == "SignalExternalWorkflowExecutionFailed"
    cancel = {"command_type": "SignalExternalWorkflowExecution",
              "attributes": {"workflow_id": "target", "signal_name": CANCEL_CHILD_SIGNAL, "input": "[]",
                             "child_workflow_only": False}}
    await _complete(ctx, sender, [cancel])
    (request,) = ctx.requests()
    await _deliver(ctx, [request, request])
    requested = [e for e in ctx.events(target.run_id) if e["event_type"] == "WorkflowExecutionCancelRequested"]
    assert len(requested) == 1 and requested[0]["attributes"]["reason"] == "canceled by workflow sender"
    assert "WorkflowExecutionSignaled" not in _events(ctx, target)
    await _deliver(ctx, ctx.requests())
    assert _events(ctx, sender).count("ExternalWorkflowExecutionSignaled") == 1
    assert rebuild("ns", "sender", sender.run_id, ctx.events(sender.run_id)).dumps() == sender.dumps()
