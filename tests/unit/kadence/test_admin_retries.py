"""The client's admin calls: retried while the frontend is unreachable (creates and deletes
with one request id for every try), the trigger not retried, and a frontend of an earlier
build that refuses the request id field answered by the call sent once more without it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kadence import Client
from kadence._retry import Backoff
from kadence.exceptions import RPCError

pytestmark = pytest.mark.timeout(10)
QUICK = Backoff(attempts=0, within=5.0, first=0.001, factor=1.0, cap=0.001)


class Transport:
    """Fails the first ``failures`` calls with ``error``, then answers ``{"ok": True}``."""

    def __init__(self, failures: int, error: RPCError) -> None:
        self.failures, self.error = failures, error
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((method, path, dict(body or {}), dict(params or {})))
        if len(self.calls) <= self.failures:
            raise self.error
        return {"ok": True}

    async def close(self) -> None:
        pass


LOST = RPCError(0, "Unavailable", "connection reset")


@pytest.mark.parametrize(("call", "method"), [
    (lambda c: c.create_namespace("ns", retention="1d"), "POST"),
    (lambda c: c.update_namespace("ns", description="d"), "PATCH"),
    (lambda c: c.create_schedule("s", "Wf", task_queue="q", interval="1h"), "POST"),
    (lambda c: c.pause_schedule("s"), "POST"),
    (lambda c: c.unpause_schedule("s"), "POST"),
    (lambda c: c.delete_schedule("s"), "DELETE"),
], ids=["create_namespace", "update_namespace", "create_schedule", "pause", "unpause", "delete_schedule"])
async def test_admin_calls_are_sent_again_unchanged_after_a_lost_answer(call: Any, method: str) -> None:
    transport = Transport(2, LOST)
    await call(Client(transport, retry=QUICK))
    assert len(transport.calls) == 3 and {c[0] for c in transport.calls} == {method}
    assert transport.calls[0] == transport.calls[1] == transport.calls[2]  # the same request id each time


async def test_creates_and_deletes_carry_a_request_id_and_take_the_callers() -> None:
    transport = Transport(0, LOST)
    client = Client(transport, retry=QUICK)
    await client.create_namespace("ns", retention="1d", request_id="mine")
    await client.create_schedule("s", "Wf", task_queue="q", interval="1h")
    await client.delete_schedule("s")
    (_, _, ns, _), (_, _, schedule, _), (_, _, _, delete) = transport.calls
    assert ns["request_id"] == "mine" and schedule["request_id"] and delete["request_id"]


async def test_a_trigger_is_not_retried() -> None:
    transport = Transport(1, LOST)
    with pytest.raises(RPCError):
        await Client(transport, retry=QUICK).trigger_schedule("s")
    assert len(transport.calls) == 1


async def test_an_earlier_frontend_refusing_the_request_id_gets_the_call_without_it() -> None:
    refused = RPCError(400, "InvalidArgument", "request_id is not a field of this request", "request_id")
    transport = Transport(1, refused)
    assert await Client(transport, retry=QUICK).create_namespace("ns", retention="1d") == {"ok": True}
    first, second = transport.calls
    assert "request_id" in first[2] and "request_id" not in second[2] and second[2]["name"] == "ns"
    other = Transport(1, RPCError(400, "InvalidArgument", "bad retention", "retention"))
    with pytest.raises(RPCError):
        await Client(other, retry=QUICK).create_namespace("ns", retention="1d")
    assert len(other.calls) == 1
