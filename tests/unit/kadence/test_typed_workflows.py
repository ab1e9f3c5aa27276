"""Typed payloads inside workflow code: the run method's, signal and query handlers' and
activities' type hints convert what history carries, driven through synthetic histories."""

from __future__ import annotations

import concurrent.futures
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from kadence import activity, workflow
from kadence._activity import ActivityDefinition
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence.converter import DataConverter, encode_payload
from kadence.exceptions import WorkflowTaskError
from kadence.replay import Replayer, decode_history
from tests.unit._fake_history import Driver, FakeHistory
from tests.unit.kadence.test_converter import XorZlib

pytestmark = pytest.mark.timeout(30)


@dataclass
class Order:
    id: UUID
    total: Decimal


@dataclass
class Receipt:
    order_id: UUID
    charged: Decimal


@activity.defn
async def charge(order: Order) -> Receipt:
    return Receipt(order.id, order.total)


@workflow.defn
class Checkout:
    def __init__(self) -> None:
        self.discounts: list[Decimal] = []

    @workflow.run
    async def run(self, order: Order) -> Receipt:
        assert isinstance(order, Order) and isinstance(order.id, UUID)
        receipt = await workflow.execute_activity(charge, order, start_to_close_timeout=timedelta(seconds=5))
        assert isinstance(receipt, Receipt), receipt
        await workflow.wait_condition(lambda: bool(self.discounts))
        return Receipt(receipt.order_id, receipt.charged - sum(self.discounts))

    @workflow.signal
    def discount(self, amount: Decimal) -> None:
        assert isinstance(amount, Decimal)
        self.discounts.append(amount)

    @workflow.query
    def owed(self, currency: str) -> dict[str, Decimal]:
        return {currency: sum(self.discounts, Decimal(0))}


ORDER_ID = "12345678-1234-5678-1234-567812345678"


def test_typed_arguments_activity_results_signals_and_result() -> None:
    history = FakeHistory("Checkout", {"id": ORDER_ID, "total": "10.50"})
    driver = Driver(Checkout, history)
    [schedule] = driver.step()
    assert json.loads(schedule["attributes"]["input"]) == [{"id": ORDER_ID, "total": "10.50"}]
    history.complete_activity("1", {"order_id": ORDER_ID, "charged": "10.50"})
    assert driver.next_task() == []
    history.signal("discount", "0.25")
    assert driver.runner.query("owed", ["EUR"]) == {"EUR": Decimal(0)}
    [done] = driver.next_task()
    assert done["command_type"] == "CompleteWorkflowExecution"
    assert json.loads(done["attributes"]["result"]) == {"order_id": ORDER_ID, "charged": "10.25"}
    assert driver.runner.query("owed", ["EUR"]) == {"EUR": Decimal("0.25")}


def test_an_argument_that_does_not_convert_fails_the_task_naming_it() -> None:
    history = FakeHistory("Checkout", {"total": "1"})
    with pytest.raises(WorkflowTaskError, match=r"argument 1 of Checkout\.run: cannot convert \{\"total\": \"1\"\} "
                                                r"to Order: missing field 'id'"):
        Driver(Checkout, history).step()


def test_a_signal_argument_that_does_not_convert_fails_the_task_naming_the_signal() -> None:
    history = FakeHistory("Checkout", {"id": ORDER_ID, "total": "1"})
    driver = Driver(Checkout, history)
    driver.step()
    history.signal("discount", "a lot")
    with pytest.raises(WorkflowTaskError, match="argument 1 of signal discount: cannot convert \"a lot\" to Decimal"):
        driver.next_task()


@workflow.defn
class ByName:
    @workflow.run
    async def run(self) -> str:
        receipt = await workflow.execute_activity("charge", start_to_close_timeout=timedelta(seconds=5),
                                                  result_type=Receipt)
        return type(receipt).__name__


def test_result_type_types_an_activity_called_by_name() -> None:
    history = FakeHistory("ByName")
    driver = Driver(ByName, history)
    driver.step()
    history.complete_activity("1", {"order_id": ORDER_ID, "charged": "1"})
    [done] = driver.next_task()
    assert json.loads(done["attributes"]["result"]) == "Receipt"


class _Recording:
    """A transport that records the calls the activity processor makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def call(self, method: str, path: str, *, body: dict[str, object] | None = None,
                   params: object = None, timeout: float | None = None) -> dict[str, object]:
        self.calls.append((path, dict(body or {})))
        return {}

    async def close(self) -> None:
        pass


async def test_activity_arguments_that_do_not_convert_fail_the_attempt_non_retryable() -> None:
    transport = _Recording()
    processor = ActivityTaskProcessor(transport, namespace="default", task_queue="q", activities=[
        ActivityDefinition.of(charge)], identity="me", executor=concurrent.futures.ThreadPoolExecutor(1))
    await processor.process({"task_token": "t", "activity_id": "1", "activity_type": "charge",
                             "input": '[{"id": "not-a-uuid", "total": "1"}]', "attempt": 1,
                             "scheduled_event_id": 5, "scheduled_time": 0})
    [(path, body)] = transport.calls
    failure = body["failure"]
    assert path == "/activity-tasks/fail" and isinstance(failure, dict)
    assert failure["type"] == "PayloadError" and failure["non_retryable"] is True
    assert "argument 1 of activity charge: cannot convert" in failure["message"]
    assert "at ['id']" in failure["message"]


async def test_a_codec_history_replays_after_decode_history() -> None:
    history = FakeHistory("Checkout", {"id": ORDER_ID, "total": "2"})
    driver = Driver(Checkout, history)
    driver.step()
    codec = XorZlib()
    started = history.events[0]["attributes"]
    started["input"] = await encode_payload(codec, started["input"], args=True)
    with pytest.raises(WorkflowTaskError):
        Replayer(workflows=[Checkout]).replay(history.events)  # the encoded form is not an Order
    Replayer(workflows=[Checkout]).replay(await decode_history(history.events, DataConverter(payload_codec=codec)))
