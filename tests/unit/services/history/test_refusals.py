"""A user command refused with no reply_to becomes a dead letter in the batch's outbox
(services/history/refusals.py, context.py ``BatchContext.reply``)."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from kadence_protocol import avro
from kadence_protocol.records import SignalWorkflowExecution, StartChildWorkflowExecution
from services.common import kafka
from services.history import children, engine, refusals
from services.history.context import BatchContext
from services.history.ledger import Ledger

NS, WID = "default", "wf-missing"
KEY = kafka.workflow_key(NS, WID)


class _Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class _Replies:
    def takes(self, reply_to: str) -> bool:
        return False


class _Shard:
    """What BatchContext.reply and current_run read of a shard (no run is known)."""

    def __init__(self) -> None:
        self.ledger = Ledger(0)
        self.replies = _Replies()
        self.current: dict[tuple[str, str], str] = {}


def _ctx() -> BatchContext:
    return BatchContext(_Shard(), 1_000, no_current=frozenset({(NS, WID)}), began=0.0)  # type: ignore[arg-type]


def _signal(**kw: Any) -> dict[str, Any]:
    cmd = {"namespace": NS, "workflow_id": WID, "run_id": None, "signal_name": "go", "input": None,
           "request_id": "r-1", "identity": "kcat", "reply_to": None}
    cmd.update(kw)
    return cmd


def _run_signal(ctx: BatchContext, cmd: dict[str, Any], offset: int = 42) -> None:
    value = avro.encode("SignalWorkflowExecution", cmd)
    ctx.taken = refusals.taken("SignalWorkflowExecution", cmd, _Record(kafka.REQUESTS, 1, offset, KEY, value), offset)
    asyncio.run(engine.signal_workflow(ctx, SignalWorkflowExecution.from_dict(cmd)))


def _letters(ctx: BatchContext) -> list[dict[str, Any]]:
    out = []
    for m in ctx.replies:
        if m.topic == kafka.DLQ:
            name, letter = avro.decode(m.value)
            assert name == "DeadLetter" and m.key == KEY
            out.append(letter)
    return out


def test_a_signal_to_no_workflow_without_reply_to_is_dead_lettered_with_its_record() -> None:
    ctx, cmd = _ctx(), _signal()
    _run_signal(ctx, cmd)
    [letter] = _letters(ctx)
    assert letter["source_topic"] == kafka.REQUESTS and letter["partition"] == 1 and letter["offset"] == 42
    assert letter["key"] == KEY and letter["value"] == avro.encode("SignalWorkflowExecution", cmd)
    assert letter["reason"].startswith("SignalWorkflowExecution refused: WorkflowNotFound: workflow 'wf-missing'")
    assert [m.topic for m in ctx.replies] == [kafka.DLQ]  # in the outbox: published after the commit


def test_with_reply_to_the_sender_gets_a_reply_and_no_dead_letter() -> None:
    ctx = _ctx()
    _run_signal(ctx, _signal(reply_to="client-1"))
    assert [m.topic for m in ctx.replies] == [kafka.REPLIES] and not _letters(ctx)


def test_an_ok_answer_and_a_reply_about_another_caller_are_not_dead_lettered() -> None:
    ctx, cmd = _ctx(), _signal()
    ctx.taken = refusals.taken("SignalWorkflowExecution", cmd, _Record(kafka.REQUESTS, 0, 7, KEY, b"x"), 7)
    ctx.reply(cmd, ok=True, run_id="run-1")  # a duplicate answered as applied
    ctx.reply({**cmd, "request_id": "someone-else"}, ok=False, error_type="WorkflowClosed")
    assert not ctx.replies
    ctx.reply(cmd, ok=False, error_type="WorkflowNotFound", error_message="gone")
    ctx.reply(cmd, ok=False, error_type="WorkflowNotFound", error_message="again")
    assert len(_letters(ctx)) == 1  # one dead letter per command


def test_no_command_running_means_no_dead_letter() -> None:
    ctx, cmd = _ctx(), _signal()
    ctx.reply(cmd, ok=False, error_type="InvalidArgument", error_message="dead-lettered by the runner already")
    assert not ctx.replies


def test_history_s_own_commands_and_worker_answers_are_not_taken() -> None:
    record = _Record(kafka.REQUESTS, 0, 3, KEY, b"x")
    for name in ("StartChildWorkflowExecution", "SignalExternalWorkflowExecution", "ChildWorkflowNotice",
                 "ApplyParentClosePolicy", "RespondWorkflowTaskCompleted", "RecordActivityTaskStarted"):
        assert refusals.taken(name, _signal(), record, 3) is None, name
    assert refusals.taken("SignalWorkflowExecution", _signal(identity=children.IDENTITY), record, 3) is not None
    assert refusals.taken("SignalWorkflowExecution", _signal(reply_to="c"), record, 3) is None


def test_a_child_start_meeting_a_running_workflow_tells_its_parent_not_the_dlq() -> None:
    ctx = _ctx()

    class _Running:
        class state:  # stands in for a Transition's state
            run_id, running = "run-0", True

    async def current_run(namespace: str, workflow_id: str) -> Any:
        return _Running()

    async def run(namespace: str, workflow_id: str, run_id: str) -> Any:
        return None

    ctx.current_run = current_run  # type: ignore[method-assign]
    ctx.run = run  # type: ignore[method-assign]
    req = {"namespace": NS, "workflow_id": WID, "new_run_id": "child-run", "workflow_type": "T", "task_queue": "q",
           "input": None, "execution_timeout_ms": 0, "run_timeout_ms": 0, "workflow_task_timeout_ms": 0,
           "request_id": "child:p:5", "parent_namespace": NS, "parent_workflow_id": "parent",
           "parent_run_id": "p", "parent_initiated_event_id": 5, "retry_policy": None}
    ctx.taken = refusals.taken("StartChildWorkflowExecution", req,
                               _Record(kafka.REQUESTS, 0, 9, KEY, b"x"), 9)
    asyncio.run(children.start_child(ctx, StartChildWorkflowExecution.from_dict(req)))
    assert [m.topic for m in ctx.replies] == [kafka.REQUESTS]  # the StartFailed notice, no dead letter
