"""The ledger's rules for commands that name no run (services/history/ledger.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.history.ledger import Ledger, request_key
from services.history.state import MutableState


class _Store:
    def __init__(self, start: tuple[str, int] | None) -> None:
        self.start = start
        self.asked = 0

    async def run_start_offset(self, namespace: str, workflow_id: str) -> tuple[str, int] | None:
        self.asked += 1
        return self.start

    async def applied_requests(self, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
        return {}


class _Shard:
    def __init__(self, store: _Store) -> None:
        self.store = store


class _Run:
    def __init__(self, run_id: str) -> None:
        self.state = MutableState(namespace="ns", workflow_id="wf", run_id=run_id, status="Running")


class _Ctx:
    """What Ledger.admit uses of a BatchContext."""

    def __init__(self, current: str | None, store: _Store) -> None:
        self.shard = _Shard(store)
        self.current = current
        self.requests: dict[tuple[str, str, str], str] = {}
        self.run_starts: dict[tuple[str, str], tuple[str, int]] = {}
        self.replies: list[dict[str, Any]] = []

    async def current_run(self, namespace: str, workflow_id: str) -> _Run | None:
        return None if self.current is None else _Run(self.current)

    def reply(self, command: dict[str, Any], **answer: Any) -> None:
        self.replies.append(answer)


def _signal(request_id: str = "", run_id: str | None = None) -> dict[str, Any]:
    return {"namespace": "ns", "workflow_id": "wf", "run_id": run_id, "request_id": request_id}


def _admit(ledger: Ledger, ctx: _Ctx, cmd: dict[str, Any], offset: int, name: str = "SignalWorkflowExecution") -> bool:
    return asyncio.run(ledger.admit(ctx, name, cmd, offset))  # type: ignore[arg-type]


def test_a_command_read_after_its_run_started_applies() -> None:
    ledger, ctx = Ledger(0), _Ctx("run-2", _Store(None))
    ctx.run_starts[("ns", "wf")] = ("run-2", 10)
    assert _admit(ledger, ctx, _signal(), 11) and not ctx.replies


def test_a_command_accepted_before_the_current_run_started_is_refused() -> None:
    ledger, ctx = Ledger(0), _Ctx("run-2", _Store(None))
    ledger.starts[("ns", "wf")] = ("run-2", 10)
    assert not _admit(ledger, ctx, _signal(), 7, "TerminateWorkflowExecution")
    assert ctx.replies[0]["ok"] is False and ctx.replies[0]["error_type"] == "WorkflowNotFound"
    assert not _admit(ledger, ctx, _signal(), 10, "StartWorkflowExecution")  # the very record that started it
    assert ctx.replies[1]["error_type"] == "WorkflowAlreadyStarted"
    assert _admit(ledger, ctx, _signal(run_id="run-1"), 7)  # names its run: not the ledger's business


def test_postgresql_is_asked_for_a_start_offset_only_for_records_read_again() -> None:
    store = _Store(("run-2", 10))
    ledger, ctx = Ledger(0), _Ctx("run-2", store)
    assert _admit(ledger, ctx, _signal(), 5) and store.asked == 0  # read in order: runs began earlier
    ledger.replay_until = 50
    assert not _admit(ledger, ctx, _signal(), 5) and store.asked == 1
    assert not _admit(ledger, ctx, _signal(), 6) and store.asked == 1  # remembered


def test_a_request_id_applied_gets_its_first_answer_whatever_run_is_current() -> None:
    ledger, ctx = Ledger(0), _Ctx("run-2", _Store(None))
    ledger.applied[request_key("SignalWorkflowExecution", "ns", "wf", "req-1")] = "run-1"
    assert not _admit(ledger, ctx, _signal("req-1"), 99)
    assert ctx.replies == [{"ok": True, "run_id": "run-1"}]
    assert _admit(ledger, ctx, _signal("req-2"), 99)
    assert _admit(ledger, ctx, _signal("req-1"), 99, "RespondWorkflowTaskCompleted")  # names its run


def test_a_request_id_is_one_command_s_a_start_s_does_not_answer_a_terminate() -> None:
    # A start's request id answered a later terminate (or signal, cancel, reset) of the same
    # workflow with the start's run, applying nothing: a client keying every call by one id
    # (an order id) lost all but its start.
    ledger, ctx = Ledger(0), _Ctx("run-1", _Store(None))
    ledger.applied[request_key("StartWorkflowExecution", "ns", "wf", "order-7")] = "run-1"
    assert request_key("StartWorkflowExecution", "ns", "wf", "order-7") == ("ns", "wf", "order-7")  # as stored before
    for name in ("TerminateWorkflowExecution", "SignalWorkflowExecution", "RequestCancelWorkflowExecution",
                 "ResetWorkflowExecution", "SignalWithStartWorkflowExecution"):
        assert _admit(ledger, ctx, _signal("order-7"), 99, name), name
    assert not _admit(ledger, ctx, _signal("order-7"), 99, "StartWorkflowExecution")  # its own copy: answered
    ledger.applied[request_key("TerminateWorkflowExecution", "ns", "wf", "order-7")] = "run-1"
    assert not _admit(ledger, ctx, _signal("order-7"), 99, "TerminateWorkflowExecution")
    assert _admit(ledger, ctx, _signal("order-7"), 99, "SignalWorkflowExecution")


def test_a_cancel_without_run_id_follows_both_rules() -> None:
    # A cancel copy read again acts neither twice nor on a run started after it was accepted.
    ledger, ctx = Ledger(0), _Ctx("run-2", _Store(None))
    ledger.applied[request_key("RequestCancelWorkflowExecution", "ns", "wf", "cancel-1")] = "run-1"
    assert not _admit(ledger, ctx, _signal("cancel-1"), 99, "RequestCancelWorkflowExecution")
    assert ctx.replies == [{"ok": True, "run_id": "run-1"}]
    ledger.starts[("ns", "wf")] = ("run-2", 10)
    assert not _admit(ledger, ctx, _signal("cancel-2"), 7, "RequestCancelWorkflowExecution")
    assert ctx.replies[1]["ok"] is False
    assert _admit(ledger, ctx, _signal("cancel-3"), 11, "RequestCancelWorkflowExecution")
