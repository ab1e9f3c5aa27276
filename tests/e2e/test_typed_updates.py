"""Typed updates end to end with a payload codec: a dataclass argument reaches the handler
(and its validator) as that dataclass, the caller gets the handler's annotated dataclass
back, the server's PostgreSQL never holds the plaintext of either, and the encoded history
replays once the codec is undone."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from kadence import ApplicationError, Client, Replayer, Worker, workflow
from kadence.converter import DataConverter
from kadence.exceptions import WorkflowUpdateFailedError
from kadence.replay import decode_history
from services.cluster import Cluster

from .test_typed_payloads import SECRET, XorZlibCodec, _database_text

pytestmark = pytest.mark.timeout(120)
QUEUE = "q-typed-update"


@dataclass
class LineItem:
    sku: str
    price: Decimal
    note: str = ""


@dataclass
class CartTotal:
    count: int
    amount: Decimal
    notes: list[str] = field(default_factory=list)


@workflow.defn
class TypedCart:
    def __init__(self) -> None:
        self.items: list[LineItem] = []
        self.closed = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.closed)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return len(self.items)

    @workflow.update
    def add(self, item: LineItem) -> CartTotal:
        if not isinstance(item, LineItem) or not isinstance(item.price, Decimal):
            raise TypeError(f"not a LineItem: {item!r}")  # fails the task: the test would hang, then fail
        self.items.append(item)
        return self._total()

    @add.validator  # type: ignore[attr-defined]
    def check_add(self, item: LineItem) -> None:
        if item.price <= 0:
            raise ApplicationError(f"{item.sku} needs a price", type="NoPrice")

    @workflow.update
    async def close(self) -> CartTotal:
        self.closed = True
        return self._total()

    def _total(self) -> CartTotal:
        return CartTotal(len(self.items), sum((i.price for i in self.items), Decimal(0)),
                         [i.note for i in self.items])


async def test_a_dataclass_update_argument_and_result_through_the_codec(cluster: Cluster) -> None:
    codec = XorZlibCodec()
    client = await Client.connect(cluster.url, data_converter=DataConverter(payload_codec=codec))
    wid = f"typed-cart-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[TypedCart]):
            handle = await client.start_workflow(TypedCart.run, id=wid, task_queue=QUEUE)
            total = await handle.execute_update(TypedCart.add, LineItem("apple", Decimal("1.25"), SECRET),
                                                timeout=60)
            assert total == CartTotal(1, Decimal("1.25"), [SECRET])  # the handler's annotated type
            pending = await handle.start_update(TypedCart.add, LineItem("pear", Decimal("0.75")), timeout=60)
            assert await pending.result(timeout=60) == CartTotal(2, Decimal("2.00"), [SECRET, ""])
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                # (a failure message is not encoded: the secret goes in the note, not the name)
                await handle.execute_update(TypedCart.add, LineItem("free", Decimal(0), SECRET), timeout=60)
            assert refused.value.rejected and refused.value.cause.type == "NoPrice"
            closed = await handle.execute_update(TypedCart.close, timeout=60)
            assert isinstance(closed, CartTotal) and closed.amount == Decimal("2.00")
            assert await asyncio.wait_for(handle.result(), 60) == 2
            events = await handle.history()
    finally:
        await client.close()
    assert codec.encoded and codec.decoded
    accepted = [e for e in events if e["event_type"] == "WorkflowExecutionUpdateAccepted"]
    completed = [e for e in events if e["event_type"] == "WorkflowExecutionUpdateCompleted"]
    assert len(accepted) == 3 and len(completed) == 3
    # What the server shows and keeps is the encoded form, of the arguments and the results.
    assert all("kadence-codec" in str(e["attributes"]["input"]) for e in accepted[:2])
    assert all("kadence-codec" in str(e["attributes"]["result"]) for e in completed)
    assert SECRET not in str(events) and "apple" not in str(events)
    text = await _database_text(cluster.settings.database_url)
    assert b"kadence-codec".hex() in text
    assert SECRET not in text and SECRET.encode().hex() not in text
    assert "apple" not in text and b"apple".hex() not in text
    # The accepted updates replay from their recorded (decoded) arguments.
    decoded = await decode_history(events, DataConverter(payload_codec=XorZlibCodec()))
    Replayer(workflows=[TypedCart]).replay(decoded)
