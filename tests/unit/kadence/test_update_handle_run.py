"""An update handle asks the run that answered for the update from then on (a continue-as-new
between two asks must not send the second to a run that would run it again), and the
client's long poll is a setting."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kadence import Client
from kadence.exceptions import RPCError

pytestmark = pytest.mark.timeout(10)


class ScriptedTransport:
    """Answers each update ask with the next outcome and keeps the bodies sent."""

    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        self.outcomes = outcomes
        self.bodies: list[Mapping[str, Any]] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        assert method == "POST" and path.endswith("/update") and body is not None, (method, path)
        self.bodies.append(body)
        return self.outcomes.pop(0)

    async def close(self) -> None:
        pass


async def test_asks_after_an_answer_naming_the_run_name_that_run() -> None:
    transport = ScriptedTransport([
        {"update_id": "u1", "stage": "requested", "run_id": None},  # the wait ran out: no run known
        {"update_id": "u1", "stage": "accepted", "run_id": "r1"},
        {"update_id": "u1", "stage": "requested", "run_id": "r1"},
        {"update_id": "u1", "stage": "completed", "result": "7", "failure": None, "run_id": "r1"},
    ])
    client = Client(transport, long_poll_seconds=2.5)
    # A start's handle acts on the chain: its asks name no run until one answered.
    handle = client.get_workflow_handle("wf")
    handle.first_execution_run_id = "r0"
    update = await handle.start_update("add", 1, id="u1")
    assert update.run_id == "r1"
    assert await update.result() == 7
    assert [b["run_id"] for b in transport.bodies] == [None, None, "r1", "r1"]
    assert {b["wait_seconds"] for b in transport.bodies} == {2.5}


def test_the_long_poll_is_bounded_as_the_frontend_bounds_it() -> None:
    with pytest.raises(ValueError, match="long_poll_seconds"):
        Client(ScriptedTransport([]), long_poll_seconds=0)
    with pytest.raises(ValueError, match="long_poll_seconds"):
        Client(ScriptedTransport([]), long_poll_seconds=601)


class Unreachable:
    """A frontend that cannot be reached (each call fails as a refused connection does) or,
    with ``hang``, one that takes each call and never answers (until the call's timeout)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.timeouts: list[float | None] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self.timeouts.append(timeout)
        if self.hang:
            await asyncio.sleep(timeout if timeout is not None else 3600)
            raise RPCError(0, "Unavailable", "timed out")
        raise RPCError(0, "Unavailable", "connection refused")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("hang", [False, True], ids=["unreachable", "not-answering"])
async def test_an_update_wait_with_a_timeout_ends_at_it_when_the_frontend_does_not_answer(hang: bool) -> None:
    transport = Unreachable(hang=hang)
    update = Client(transport).get_workflow_handle("wf").get_update_handle("u1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError, match="u1"):
        await update.result(timeout=0.5)
    assert loop.time() - started < 2.5  # the 30 s of the client's retries before
    assert all(t is not None and t <= 1.5 for t in transport.timeouts), transport.timeouts  # wait + 1 s
