"""Typed update payloads: the handler's (and validator's) parameter hints convert the
arguments, the result goes out through the converter, the client converts it back by the
handler's return annotation, and the payload codec is applied at the client's and the
worker's edges (the update inputs a task brings, the CompleteWorkflowUpdate result, the
accepted event's input on replay)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from kadence import Client, workflow
from kadence._worker.payloads import decode_events, decode_updates, encode_commands
from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.runner import WorkflowRunner
from kadence.converter import CODEC_MARKER, DataConverter, decode_payload, encode_payload
from kadence.exceptions import PayloadError, WorkflowTaskError
from kadence.replay import Replayer, decode_history
from tests.unit._fake_history import FakeHistory
from tests.unit.kadence.test_converter import XorZlib

pytestmark = pytest.mark.timeout(30)


@dataclass
class Item:
    sku: str
    price: Decimal


@dataclass
class Total:
    count: int
    amount: Decimal


@workflow.defn
class Basket:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.seen_by_validator: list[object] = []

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: len(self.items) >= 2)
        return len(self.items)

    @workflow.update
    def add(self, item: Item) -> Total:
        assert isinstance(item, Item) and isinstance(item.price, Decimal), item
        self.items.append(item)
        return Total(len(self.items), sum((i.price for i in self.items), Decimal(0)))

    @add.validator  # type: ignore[attr-defined]
    def check_add(self, item: Item) -> None:
        self.seen_by_validator.append(item)


def _runner() -> WorkflowRunner:
    return WorkflowRunner(WorkflowDefinition.of(Basket), namespace="default", workflow_id="wf-1", run_id="run-1")


def _step(runner: WorkflowRunner, history: FakeHistory, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    commands = [c.to_json() for c in runner.apply(history.task_events(), updates=updates)]
    history.complete_task(commands)
    return commands


def test_an_update_argument_is_converted_by_the_handler_hints_and_its_result_encoded() -> None:
    history = FakeHistory("Basket")
    runner = _runner()
    assert _step(runner, history, []) == []
    history.request_update("u1", "add", {"sku": "apple", "price": "1.25"})
    history.schedule_task()
    commands = _step(runner, history, history.waiting_updates())
    assert [c["command_type"] for c in commands] == ["AcceptWorkflowUpdate", "CompleteWorkflowUpdate"]
    assert json.loads(commands[1]["attributes"]["result"]) == {"count": 1, "amount": "1.25"}
    assert runner.instance._obj.seen_by_validator == [Item("apple", Decimal("1.25"))]  # type: ignore[union-attr]
    # Replayed from history: the accepted event's input converts the same way.
    assert Replayer(workflows=[Basket]).replay(history.events) == []


def test_an_update_argument_that_does_not_convert_is_rejected_naming_it() -> None:
    history = FakeHistory("Basket")
    runner = _runner()
    _step(runner, history, [])
    history.request_update("u1", "add", {"sku": "apple"})  # no price
    history.schedule_task()
    [reject] = _step(runner, history, history.waiting_updates())
    assert reject["command_type"] == "RejectWorkflowUpdate"
    failure = reject["attributes"]["failure"]
    assert failure["type"] == "PayloadError"
    assert "argument 1 of update add: cannot convert" in failure["message"] and "price" in failure["message"]
    assert not any(e["event_type"].startswith("WorkflowExecutionUpdate") for e in history.events)


def test_a_recorded_update_whose_input_no_longer_converts_fails_the_replay() -> None:
    history = FakeHistory("Basket")
    runner = _runner()
    _step(runner, history, [])
    history.request_update("u1", "add", {"sku": "apple", "price": "1"})
    history.schedule_task()
    _step(runner, history, history.waiting_updates())
    accepted = next(e for e in history.events if e["event_type"] == "WorkflowExecutionUpdateAccepted")
    accepted["attributes"]["input"] = json.dumps([{"sku": "apple"}])
    with pytest.raises(WorkflowTaskError, match="cannot replay"):
        Replayer(workflows=[Basket]).replay(history.events)


async def test_the_worker_edge_undoes_the_codec_on_updates_and_applies_it_to_their_results() -> None:
    codec = XorZlib()
    plain = json.dumps([{"sku": "apple", "price": "2"}])
    encoded = await encode_payload(codec, plain, args=True)
    assert encoded is not None and "apple" not in encoded
    # The poll hands out an update's input as a JSON array (of the codec's one marker object).
    [request] = await decode_updates(codec, [{"update_id": "u1", "name": "add", "input": json.loads(encoded)}])
    assert request["input"] == json.loads(plain)
    commands = await encode_commands(codec, [
        {"command_type": "AcceptWorkflowUpdate", "attributes": {"update_id": "u1"}},
        {"command_type": "CompleteWorkflowUpdate", "attributes": {"update_id": "u1", "result": '{"count":1}',
                                                                  "failure": None}},
    ])
    assert commands[0]["attributes"] == {"update_id": "u1"}
    result = commands[1]["attributes"]["result"]
    assert CODEC_MARKER in result and "count" not in result
    assert await decode_payload(codec, result) == '{"count":1}'
    # On replay the accepted event's input is decoded like a signal's.
    [event] = await decode_events(codec, [{"event_id": 7, "event_type": "WorkflowExecutionUpdateAccepted",
                                           "attributes": {"update_id": "u1", "update_name": "add",
                                                          "input": encoded}}])
    assert json.loads(event["attributes"]["input"]) == json.loads(plain)
    assert await decode_updates(None, [{"update_id": "u1"}]) == [{"update_id": "u1"}]


async def test_a_codec_history_with_updates_replays_after_decode_history() -> None:
    codec = XorZlib()
    history = FakeHistory("Basket")
    runner = _runner()
    _step(runner, history, [])
    history.request_update("u1", "add", {"sku": "apple", "price": "2"})
    history.schedule_task()
    _step(runner, history, history.waiting_updates())
    accepted = next(e for e in history.events if e["event_type"] == "WorkflowExecutionUpdateAccepted")
    accepted["attributes"]["input"] = await encode_payload(codec, accepted["attributes"]["input"], args=True)
    with pytest.raises(WorkflowTaskError):
        Replayer(workflows=[Basket]).replay(history.events)  # the encoded form is not an Item
    Replayer(workflows=[Basket]).replay(await decode_history(history.events, DataConverter(payload_codec=codec)))


class _UpdateFrontend:
    """Answers update calls as the frontend would once the update completed, keeping the bodies."""

    def __init__(self, result: str | None) -> None:
        self.result = result
        self.bodies: list[Mapping[str, Any]] = []

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        assert path.endswith("/update") and body is not None
        self.bodies.append(body)
        return {"update_id": body["update_id"], "stage": "completed", "result": self.result, "failure": None}

    async def close(self) -> None:
        pass


async def test_the_client_encodes_update_arguments_and_decodes_the_result_by_the_return_annotation() -> None:
    codec = XorZlib()
    result = await encode_payload(codec, '{"count": 1, "amount": "2"}')
    frontend = _UpdateFrontend(result)
    client = Client(frontend, data_converter=DataConverter(payload_codec=codec))
    handle = client.get_workflow_handle("wf-1")
    total = await handle.execute_update(Basket.add, Item("apple", Decimal("2")), id="u1")
    assert total == Total(1, Decimal("2"))
    sent = frontend.bodies[0]["input"]
    assert "apple" not in json.dumps(sent) and CODEC_MARKER in sent[0]
    assert await decode_payload(codec, json.dumps(sent), args=True) == '[{"sku":"apple","price":"2"}]'
    # By name there is no annotation: plain JSON, unless result_type names the type.
    assert await handle.execute_update("add", Item("pear", Decimal("1"))) == {"count": 1, "amount": "2"}
    pending = await handle.start_update("add", Item("pear", Decimal("1")), result_type=Total)
    assert await pending.result() == Total(1, Decimal("2"))


async def test_a_client_without_the_codec_refuses_an_encoded_update_result() -> None:
    frontend = _UpdateFrontend(await encode_payload(XorZlib(), '{"count": 1, "amount": "2"}'))
    handle = Client(frontend).get_workflow_handle("wf-1")
    with pytest.raises(PayloadError, match="no payload codec is configured"):
        await handle.execute_update(Basket.add, Item("apple", Decimal("2")))
