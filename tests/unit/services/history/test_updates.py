"""Updates in history, without I/O: the operations of services/history/updates.py on
in-memory runs, the fold of the two update events, the unseen rule and the validation."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kadence_protocol import avro
from kadence_protocol.enums import UpdateStage, WorkflowTaskFailedCause
from kadence_protocol.queries import UPDATE_RESULT_NAME
from kadence_protocol.records import UpdateWorkflowExecution
from services.common import validation
from services.history import engine, updates
from services.history.state import MutableState, UpdateInfo, UpdateRequest, events_only, rebuild
from tests.unit import _answers as answers
from tests.unit.services.history.test_state import MemoryContext, _ref, _start

pytestmark = pytest.mark.timeout(10)


class ReplyContext(MemoryContext):
    """MemoryContext that keeps whom each reply went to."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def reply(self, command: dict[str, Any], **kw: Any) -> None:
        super().reply(command, **kw)
        self.sent.append((command["request_id"], kw))

    def to(self, request_id: str) -> list[dict[str, Any]]:
        return [kw for rid, kw in self.sent if rid == request_id]


def _update(uid: str = "u1", request_id: str = "q1", wait: str = "completed", **kw: Any) -> UpdateWorkflowExecution:
    return UpdateWorkflowExecution.from_dict({
        "namespace": "ns", "workflow_id": "wf", "run_id": None, "update_id": uid, "update_name": "set", "input": "[5]",
        "wait_for_stage": wait, "request_id": request_id, "identity": "caller", "reply_to": "frontend-1", **kw})


def _accept(uid: str = "u1") -> dict[str, Any]:
    return {"command_type": "AcceptWorkflowUpdate", "attributes": {"update_id": uid}}


def _reject(uid: str = "u1") -> dict[str, Any]:
    return {"command_type": "RejectWorkflowUpdate", "attributes": {"update_id": uid, "failure": {
        "message": "no", "type": "Invalid", "stack_trace": "", "non_retryable": True, "details": None}}}


def _complete(uid: str = "u1", result: str = "6") -> dict[str, Any]:
    return {"command_type": "CompleteWorkflowUpdate", "attributes": {"update_id": uid, "result": result,
                                                                    "failure": None}}


_CLOSE = {"command_type": "CompleteWorkflowExecution", "attributes": {"result": "1"}}


def _kinds(ctx: MemoryContext, s: MutableState) -> list[str]:
    return [e["event_type"] for e in ctx.events(s.run_id)]


async def _running(ctx: MemoryContext) -> MutableState:
    await engine.start_workflow(ctx, _start())
    s = next(iter(ctx.runs.values()))
    await answers.workflow_task_completed(ctx, _ref(s, 2) | {"commands": []})
    return s


async def _complete_wt(ctx: MemoryContext, s: MutableState, commands: list[dict[str, Any]]) -> None:
    assert s.wt is not None
    await answers.workflow_task_completed(ctx, _ref(s, s.wt.scheduled_event_id) | {"commands": commands})


def _outcome(kw: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(kw["update_outcome"]))


async def test_a_request_schedules_a_task_and_leaves_no_event_of_its_own() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    before = _kinds(ctx, s)
    await updates.request_update(ctx, _update())
    assert _kinds(ctx, s)[len(before):] == ["WorkflowTaskScheduled"]
    assert s.update_requests["u1"].stage == "requested" and not ctx.to("q1")


async def test_accept_and_complete_record_two_events_and_answer_the_caller() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_accept(), _complete()])
    assert _kinds(ctx, s)[-2:] == ["WorkflowExecutionUpdateAccepted", "WorkflowExecutionUpdateCompleted"]
    accepted = ctx.events(s.run_id)[-2]["attributes"]
    assert accepted["input"] == "[5]" and accepted["update_name"] == "set"
    (answer,) = ctx.to("q1")
    assert answer["ok"] and _outcome(answer) == {"update_id": "u1", "stage": "completed", "result": "6",
                                                  "failure": None, "run_id": s.run_id}
    assert "u1" not in s.update_requests and s.updates["u1"].completed
    # The same update id again: the known outcome, nothing runs again.
    await updates.request_update(ctx, _update(request_id="q2"))
    assert _outcome(ctx.to("q2")[0])["result"] == "6" and s.wt is None


async def test_a_caller_waiting_for_accepted_is_answered_at_accept_the_other_at_completion() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update(wait="accepted"))
    await updates.request_update(ctx, _update(request_id="q2"))  # the same update, another caller
    await _complete_wt(ctx, s, [_accept()])
    assert _outcome(ctx.to("q1")[0])["stage"] == "accepted" and not ctx.to("q2")
    await updates.request_update(ctx, _update())  # re-asked while running: a waiter, no new task
    assert s.wt is None
    s.inputs_pending = True  # some input wakes the workflow, whose handler then returns
    t = await ctx.run("ns", "wf", s.run_id)
    assert t is not None
    engine.settle(t)
    await _complete_wt(ctx, s, [_complete()])
    assert _outcome(ctx.to("q2")[0])["stage"] == "completed"
    assert _outcome(ctx.to("q1")[-1])["stage"] == "completed"


async def test_a_rejection_records_no_update_event_and_is_remembered() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    n = len(ctx.events(s.run_id))
    await _complete_wt(ctx, s, [_reject()])
    added = _kinds(ctx, s)[n:]
    assert not [k for k in added if "Update" in k]
    (answer,) = ctx.to("q1")
    assert _outcome(answer)["stage"] == "rejected" and _outcome(answer)["failure"]["message"] == "no"
    await updates.request_update(ctx, _update(request_id="q2"))
    assert _outcome(ctx.to("q2")[0])["stage"] == "rejected" and s.wt is None


async def test_a_wait_by_id_for_an_unknown_update_is_refused_at_once_and_leaves_the_id_free() -> None:
    # get_update_handle's wait reaching the run before the update it waits for: refused
    # UpdateNotFound by history, no task, nothing remembered; the update then runs.
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update(update_name=UPDATE_RESULT_NAME, input=None, request_id="w1"))
    (refused,) = ctx.to("w1")
    assert _outcome(refused)["stage"] == "rejected" and _outcome(refused)["failure"]["type"] == "UpdateNotFound"
    assert s.wt is None and "u1" not in s.update_requests
    await updates.request_update(ctx, _update())
    assert s.update_requests["u1"].stage == "requested" and s.wt is not None
    await updates.request_update(ctx, _update(update_name=UPDATE_RESULT_NAME, input=None, request_id="w2"))
    assert not ctx.to("w2")  # known now: the wait joins the update's callers
    await _complete_wt(ctx, s, [_accept(), _complete()])
    assert _outcome(ctx.to("w2")[0])["result"] == "6" and _outcome(ctx.to("q1")[0])["result"] == "6"


async def test_a_wait_by_id_a_worker_refused_before_does_not_refuse_the_update() -> None:
    # A build before this one admitted such a wait and the worker refused it: the remembered
    # refusal answers later waits, but the update itself, sent after, runs.
    ctx = ReplyContext()
    s = await _running(ctx)
    s.update_requests["u1"] = UpdateRequest(name=UPDATE_RESULT_NAME, input=None, identity="", stage=UpdateStage.REJECTED,
                                            failure={"message": "no such update", "type": "UpdateNotFound",
                                                     "stack_trace": "", "non_retryable": True, "details": None})
    await updates.request_update(ctx, _update(update_name=UPDATE_RESULT_NAME, input=None, request_id="w1"))
    assert _outcome(ctx.to("w1")[0])["stage"] == "rejected"
    await updates.request_update(ctx, _update())
    assert not ctx.to("q1") and s.update_requests["u1"].stage == "requested" and s.wt is not None


async def test_an_update_a_reset_took_to_the_new_run_is_asked_there() -> None:
    # A reset terminated the run that accepted u1 and gave u1 to the new run (reset.py
    # _carry_updates): an ask pinned to the old run is sent on to the new one. An id the new
    # run does not have is answered as before (closed).
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_accept()])
    new = MutableState(namespace="ns", workflow_id="wf", run_id="run-after-reset")
    new.update_requests["u1"] = UpdateRequest(name="set", input="[5]", identity="caller", stage=UpdateStage.REQUESTED)
    ctx.new_run(new)
    t = await ctx.run("ns", "wf", s.run_id)
    assert t is not None
    t.add("WorkflowExecutionTerminated", reason="reset to run run-after-reset", identity="", new_run_id=new.run_id)
    engine.settle(t)
    updates.after(ctx, t)
    await updates.request_update(ctx, _update(request_id="q2", run_id=s.run_id))
    (sent_on,) = ctx.to("q2")
    assert (sent_on["ok"], sent_on["error_type"], sent_on["run_id"]) == (False, updates.EARLIER_RUN, new.run_id)
    await updates.request_update(ctx, _update(uid="u9", request_id="q3", run_id=s.run_id))
    assert ctx.to("q3")[0]["error_type"] == updates.CLOSED


async def test_a_request_while_a_task_is_in_flight_is_owed_the_next_task() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    s.inputs_pending = True
    t = await ctx.run("ns", "wf", s.run_id)
    assert t is not None
    engine.settle(t)  # a task is outstanding
    assert s.wt is not None
    sid = s.wt.scheduled_event_id
    await updates.request_update(ctx, _update())
    assert s.wt.scheduled_event_id == sid  # no second task while one is in flight
    await _complete_wt(ctx, s, [])  # that task did not see it
    assert s.wt is not None and s.wt.scheduled_event_id > sid


async def test_a_task_closing_the_run_over_an_unanswered_update_is_refused() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_CLOSE])
    assert s.running and _kinds(ctx, s)[-2:] == ["WorkflowTaskFailed", "WorkflowTaskScheduled"]
    assert ctx.events(s.run_id)[-2]["attributes"]["cause"] == WorkflowTaskFailedCause.UNHANDLED_COMMAND
    # Answered in the same task, the close goes through.
    await _complete_wt(ctx, s, [_accept(), _complete(), _CLOSE])
    assert s.status == "Completed" and _outcome(ctx.to("q1")[0])["stage"] == "completed"


async def test_a_run_closing_with_an_update_running_answers_workflow_closed() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_accept(), _CLOSE])
    assert s.status == "Completed" and not ctx.to("q1")
    t = await ctx.run("ns", "wf", s.run_id)
    assert t is not None
    updates.after(ctx, t)
    (answer,) = ctx.to("q1")
    assert not answer["ok"] and answer["error_type"] == updates.CLOSED
    await updates.request_update(ctx, _update("u2", request_id="q3"))
    assert ctx.to("q3")[0]["error_type"] == updates.CLOSED


async def test_an_update_nobody_answers_is_rejected_after_a_few_tasks() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    for _ in range(updates.MAX_UNANSWERED_TASKS):
        await _complete_wt(ctx, s, [])
    assert _outcome(ctx.to("q1")[0])["failure"]["type"] == updates.NOT_HANDLED
    assert s.wt is None


async def test_bad_update_commands_fail_the_task() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_complete()])  # completes what was never accepted
    assert _kinds(ctx, s)[-1] == "WorkflowTaskFailed"  # the next attempt is transient (transient.py)
    assert ctx.events(s.run_id)[-1]["attributes"]["cause"] == "BadCommand"


async def test_the_fold_of_update_events_agrees_with_the_live_state() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await updates.request_update(ctx, _update("u2", request_id="q2"))
    await _complete_wt(ctx, s, [_accept(), _accept("u2"), _complete()])
    events = [avro.decode(avro.encode("HistoryEvent", e))[1] for e in ctx.events(s.run_id)]
    rebuilt = rebuild("ns", "wf", s.run_id, events)
    assert events_only(json.loads(rebuilt.dumps())) == events_only(json.loads(s.dumps()))
    assert rebuilt.updates["u1"].completed and not rebuilt.updates["u2"].completed
    assert MutableState.loads(s.dumps()).update_requests == s.update_requests


def test_the_request_and_the_commands_are_validated() -> None:
    validation.check_command("UpdateWorkflowExecution", _update().to_dict(), validation.DEFAULT_LIMITS)
    with pytest.raises(validation.Invalid) as bad:
        validation.check_command("UpdateWorkflowExecution", _update(wait_for_stage="admitted").to_dict(),
                                 validation.DEFAULT_LIMITS)
    assert bad.value.field == "wait_for_stage"
    with pytest.raises(validation.Invalid):
        validation.check_command("UpdateWorkflowExecution", _update(update_id="").to_dict(), validation.DEFAULT_LIMITS)
    validation.commands([_accept(), _reject(), _complete()], "commands")
    with pytest.raises(validation.Invalid):
        validation.commands([_complete(result="{nope")], "commands")
    # The request is a record of kadence.requests.
    name, decoded = avro.decode(avro.encode("UpdateWorkflowExecution", _update().to_dict()))
    assert name == "UpdateWorkflowExecution" and decoded["update_id"] == "u1"


def test_the_encode_cli_writes_an_update_record() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kadence.cli", "encode", "update", "--workflow-id", "w", "--update-name", "add",
         "--update-id", "u-1", "--input", "[2]", "--reply-to", "me", "--request-id", "r-1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    name, record = avro.decode(bytes.fromhex(done.stdout.strip()))
    assert name == "UpdateWorkflowExecution"
    assert record == {"namespace": "default", "workflow_id": "w", "run_id": None, "update_id": "u-1",
                      "update_name": "add", "input": "[2]", "wait_for_stage": "completed", "request_id": "r-1",
                      "identity": "", "reply_to": "me"}


async def test_the_waiters_of_one_update_are_bounded_and_not_repeated() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await updates.request_update(ctx, _update())  # the same request read twice: one waiter
    assert len(s.update_requests["u1"].waiters) == 1
    for i in range(updates.MAX_WAITERS + 5):
        await updates.request_update(ctx, _update(request_id=f"again-{i}"))
    waiters = s.update_requests["u1"].waiters
    assert len(waiters) == updates.MAX_WAITERS and waiters[-1].request_id == f"again-{updates.MAX_WAITERS + 4}"


_CONTINUE = {"command_type": "ContinueAsNewWorkflowExecution",
             "attributes": {"workflow_type": "", "task_queue": "", "input": "[]"}}


async def test_an_update_id_the_run_accepted_is_sent_back_to_it_from_the_run_it_continued_as() -> None:
    ctx = ReplyContext()
    s = await _running(ctx)
    await updates.request_update(ctx, _update())
    await _complete_wt(ctx, s, [_accept(), _complete(), _CONTINUE])
    new = await ctx.current_run("ns", "wf")
    assert new is not None and new.state.run_id != s.run_id
    assert new.state.earlier_updates == {"u1": s.run_id}

    # Asked of the chain's current run: refused, naming the run that accepted it; nothing admitted.
    await updates.request_update(ctx, _update(request_id="q2"))
    (refused,) = ctx.to("q2")
    assert not refused["ok"] and refused["error_type"] == updates.EARLIER_RUN and refused["run_id"] == s.run_id
    assert not new.state.update_requests
    # Asked of that run: its outcome, naming it.
    await updates.request_update(ctx, _update(request_id="q3", run_id=s.run_id))
    assert _outcome(ctx.to("q3")[0]) == {"update_id": "u1", "stage": "completed", "result": "6", "failure": None,
                                         "run_id": s.run_id}
    # A new update id runs in the new run.
    await updates.request_update(ctx, _update("u2", request_id="q4"))
    assert new.state.update_requests["u2"].stage == "requested"


def test_a_continue_as_new_carries_the_newest_update_ids_of_the_chain() -> None:
    s = MutableState(run_id="r2", earlier_updates={f"old{i}": "r1" for i in range(updates.MAX_EARLIER_UPDATES)})
    assert updates.carried(s) == s.earlier_updates and updates.carried(s) is not s.earlier_updates
    s.updates["mine"] = UpdateInfo(name="set", accepted_event_id=5)
    carried = updates.carried(s)
    assert len(carried) == updates.MAX_EARLIER_UPDATES and carried["mine"] == "r2" and "old0" not in carried
