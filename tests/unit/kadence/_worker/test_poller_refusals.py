"""A poller retries what may pass (5xx, lost connections) but stops on refused credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kadence._worker import poller
from kadence._worker.poller import REFUSALS_BEFORE_STOPPING, Poller, Slots
from kadence.exceptions import RPCError, WorkerRefusedError
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(30)


class Answers:
    """A transport answering polls from a script of errors, then empty answers."""

    def __init__(self, *errors: RPCError) -> None:
        self.errors = list(errors)
        self.polls = 0

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        await asyncio.sleep(0.01)
        return {"tasks": []}


async def _nothing(task: Mapping[str, Any]) -> None:
    pass


def _poller(transport: Answers) -> Poller:
    return Poller(transport, "/task-queues/q/workflow-tasks/poll", process=_nothing,  # type: ignore[arg-type]
                  slots=Slots(1), identity="test", max_tasks=1, wait_seconds=1)


def _forbidden() -> RPCError:
    return RPCError(403, "PermissionDenied", "worker lacks the worker permission in shop")


async def test_refused_polls_in_a_row_end_the_poller_with_a_clear_error() -> None:
    transport = Answers(*(_forbidden() for _ in range(REFUSALS_BEFORE_STOPPING)))
    with pytest.raises(WorkerRefusedError) as caught:
        await asyncio.wait_for(_poller(transport).run(), timeout=10)
    assert caught.value.status == 403 and caught.value.error_type == "PermissionDenied"
    assert caught.value.path == "/task-queues/q/workflow-tasks/poll" and "api_key" in str(caught.value)


async def test_fewer_refusals_or_unavailable_answers_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # Refusals broken by an answer start counting again; 503s never stop the poller. What is
    # looked at is whether it polls again, not how long it waits: the backoff is capped at 20 ms
    # instead of 10 s (its doubling from 0.1 s made five failures take three seconds).
    monkeypatch.setattr(poller, "_MAX_BACKOFF_S", 0.02)
    errors = [*(_forbidden() for _ in range(REFUSALS_BEFORE_STOPPING - 1)), RPCError(503, "Unavailable", "busy"),
              *(_forbidden() for _ in range(REFUSALS_BEFORE_STOPPING - 1))]
    transport = Answers(*errors)
    running = asyncio.ensure_future(_poller(transport).run())
    try:
        await eventually(lambda: transport.polls >= len(errors) + 3, what="polls answered again")
        assert not running.done(), running
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
