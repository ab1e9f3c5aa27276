"""How the frontend engine hands its commands to the command bus (services/common/colocation.py):
every command queued for the broker goes to the bus with its partition, and with tracing
on it still does, carrying the trace context (tracing used to turn the hand-over off)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kadence_protocol.tracing import tracer
from services.common import colocation, kafka, telemetry
from services.frontend.engine import Engine, _decode_page_token, _encode_page_token
from services.frontend.errors import InvalidArgument
from services.frontend.tokens import TokenKeys

pytestmark = pytest.mark.timeout(10)


class Producer:
    """The producer calls the engine makes, answered at once at offset 7."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send(self, topic: str, value: bytes, key: bytes, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        self.sent.append({"topic": topic, "key": key, "partition": partition, "headers": headers})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(type("Metadata", (), {"partition": partition, "offset": 7})())
        return future


def _engine(producer: Producer, commands: colocation.CommandBus) -> Engine:
    return Engine(instance_id="fe", producer=producer, replies=None, closes=None, reads=None,  # type: ignore[arg-type]
                  matching=None, commands=commands, token_keys=TokenKeys.of([TokenKeys.new_key()]))  # type: ignore[arg-type]


SIGNAL = {"namespace": "default", "workflow_id": "wf", "run_id": None, "signal_name": "s", "input": "[]",
          "request_id": "r", "identity": "", "reply_to": None}


@pytest.fixture
def traced() -> Iterator[None]:
    provider = TracerProvider()
    telemetry.configure(tracer_provider=provider)
    try:
        yield
    finally:
        telemetry.reset()
        provider.shutdown()


async def test_each_command_goes_to_the_bus_with_its_partition() -> None:
    taken: list[tuple[Any, ...]] = []
    producer = Producer()
    engine = _engine(producer, colocation.ColocatedCommands(lambda *args: taken.append(args)))
    await engine._produce("SignalWorkflowExecution", SIGNAL)
    (partition, key, _, headers, acked, checked), = taken
    assert key == kafka.workflow_key("default", "wf") and partition == producer.sent[0]["partition"]
    assert headers == () and producer.sent[0]["headers"] is None and acked.result().offset == 7
    assert checked == engine.limits  # checked here under these limits: history need not check it again


async def test_traced_the_command_is_still_handed_over_with_its_trace_context(traced: None) -> None:
    taken: list[tuple[Any, ...]] = []
    producer = Producer()
    bus = colocation.traced_commands(colocation.ColocatedCommands(lambda *args: taken.append(args)))
    engine = _engine(producer, bus)
    t = tracer()
    assert t is not None
    with t.start_as_current_span("api call") as call:
        await engine._produce("SignalWorkflowExecution", SIGNAL)
    assert len(taken) == 1  # not turned off by tracing
    headers = dict(taken[0][3])
    assert f"{call.get_span_context().span_id:016x}".encode() in headers["traceparent"]
    assert dict(producer.sent[0]["headers"])["traceparent"] == headers["traceparent"]


async def test_on_the_broker_path_nothing_is_handed_over() -> None:
    producer = Producer()
    engine = _engine(producer, colocation.KafkaCommands())
    await engine._produce("SignalWorkflowExecution", SIGNAL)
    assert len(producer.sent) == 1


@pytest.mark.parametrize("forged", [{"run_id": "r", "next_event_id": 2**63}, {"run_id": "r\x00", "next_event_id": 1},
                                    {"run_id": "\ud800", "next_event_id": 1}, {"run_id": "r", "next_event_id": 0}])
def test_a_forged_history_page_token_is_refused_as_not_ours(forged: dict[str, Any]) -> None:
    # A NUL, a lone surrogate or an event id past 64 bits reached PostgreSQL: a 500, not a 400.
    token = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="not a token this API returned"):
        _decode_page_token(token)
    assert _decode_page_token(_encode_page_token("r", 2**63 - 1)) == ("r", 2**63 - 1)
