"""Typed payloads and a payload codec end to end: dataclasses through every path (start,
activity arguments and result, signal, query, result), and with a codec the server's
PostgreSQL never holds the plaintext while the workflow sees the right values."""

from __future__ import annotations

import asyncio
import enum
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from kadence import Client, Worker, activity, workflow
from kadence.converter import DataConverter
from services.cluster import Cluster
from tests.e2e.history_harness import history_of
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)

SECRET = "card-4111-1111-1111-1111"


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


@dataclass
class Order:
    id: uuid.UUID
    card: str
    amount: Decimal
    placed: datetime
    tier: Tier
    lines: list[str] = field(default_factory=list)


@dataclass
class Receipt:
    order_id: uuid.UUID
    card: str
    charged: Decimal
    at: datetime
    notes: list[str]


@activity.defn
async def charge_card(order: Order) -> Receipt:
    assert isinstance(order, Order) and isinstance(order.amount, Decimal) and order.tier is Tier.GOLD
    activity.heartbeat(order.card)
    return Receipt(order.id, order.card, order.amount, order.placed + timedelta(seconds=1), [])


@workflow.defn
class TypedCheckout:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.order: Order | None = None

    @workflow.run
    async def run(self, order: Order) -> Receipt:
        self.order = order
        receipt = await workflow.execute_activity(charge_card, order, start_to_close_timeout=timedelta(seconds=20))
        assert isinstance(receipt, Receipt) and isinstance(receipt.at, datetime)
        await workflow.wait_condition(lambda: len(self.notes) > 0)
        receipt.notes = list(self.notes)
        return receipt

    @workflow.signal
    def note(self, text: str, when: datetime) -> None:
        assert isinstance(when, datetime)
        self.notes.append(f"{text}@{when.isoformat()}")

    @workflow.query
    def current(self) -> Order | None:
        return self.order


class XorZlibCodec:
    """Compress, then XOR: enough to hide the plaintext for this test (not encryption)."""

    name = "test-xor-zlib"

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    async def encode(self, data: bytes) -> bytes:
        self.encoded += 1
        return bytes(b ^ 0xA5 for b in zlib.compress(data))

    async def decode(self, data: bytes) -> bytes:
        self.decoded += 1
        return zlib.decompress(bytes(b ^ 0xA5 for b in data))


def _order() -> Order:
    return Order(uuid.uuid4(), SECRET, Decimal("12.34"), datetime(2026, 3, 1, 9, 30, tzinfo=UTC), Tier.GOLD, ["a"])


async def _run(client: Client, queue: str) -> tuple[str, Order]:
    order = _order()
    wid = f"typed-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[TypedCheckout], activities=[charge_card]):
        handle = await client.start_workflow(TypedCheckout.run, order, id=wid, task_queue=queue)

        async def ready() -> bool:
            return await handle.query(TypedCheckout.current) is not None

        await eventually(ready, timeout=30)
        seen = await handle.query(TypedCheckout.current)
        assert seen == order  # the query's answer comes back as an Order
        await handle.signal(TypedCheckout.note, f"{SECRET} ok", datetime(2026, 3, 1, 10, tzinfo=UTC))
        receipt = await asyncio.wait_for(handle.result(), 60)
    assert isinstance(receipt, Receipt)
    assert receipt == Receipt(order.id, SECRET, Decimal("12.34"), order.placed + timedelta(seconds=1),
                              [f"{SECRET} ok@2026-03-01T10:00:00+00:00"])
    return wid, order


async def test_typed_payloads_round_trip_through_every_path(client: Client) -> None:
    wid, _ = await _run(client, "q-typed")
    handle = client.get_workflow_handle(wid, result_type=Receipt)
    assert isinstance(await handle.result(), Receipt)
    assert (await client.get_workflow_handle(wid).result())["card"] == SECRET  # no type: plain JSON


async def _run_id(dsn: str, workflow_id: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", workflow_id))
    finally:
        await conn.close()


async def _database_text(dsn: str) -> str:
    """Every row of every table of the server's database as text (bytea as hex)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE'")
        texts = []
        for row in tables:
            name = row["table_name"]
            texts += [r[0] for r in await conn.fetch(f'SELECT t::text FROM "{name}" t')]
        return "\n".join(texts)
    finally:
        await conn.close()


async def test_with_a_codec_the_server_never_holds_the_plaintext(cluster: Cluster) -> None:
    codec = XorZlibCodec()
    client = await Client.connect(cluster.url, data_converter=DataConverter(payload_codec=codec))
    try:
        wid, _ = await _run(client, "q-codec")
        events = await client.get_workflow_handle(wid).history()
    finally:
        await client.close()
    assert codec.encoded and codec.decoded
    started = events[0]["attributes"]["input"]
    assert "kadence-codec" in str(started) and SECRET not in str(started)  # what the server shows
    assert SECRET not in str(events)
    text = await _database_text(cluster.settings.database_url)
    assert b"kadence-codec".hex() in text  # the history is there (Avro, bytea), encoded
    assert SECRET not in text and SECRET.encode().hex() not in text
    dsn = cluster.settings.database_url
    stored = await history_of(dsn, await _run_id(dsn, wid))
    assert len(stored) == len(events) and "kadence-codec" in str(stored) and SECRET not in str(stored)

    # Without the codec, the same history cannot be read: a clear error, not garbage.
    plain = await Client.connect(cluster.url)
    try:
        with pytest.raises(Exception, match="encoded by codec 'test-xor-zlib'"):
            await plain.get_workflow_handle(wid).result()
    finally:
        await plain.close()


@workflow.defn
class TypedChildCharge:
    @workflow.run
    async def run(self, order: Order) -> Receipt:
        assert isinstance(order, Order) and order.tier is Tier.GOLD
        return await workflow.execute_activity(charge_card, order, start_to_close_timeout=timedelta(seconds=20))


@workflow.defn
class TypedParent:
    @workflow.run
    async def run(self, order: Order) -> Receipt:
        receipt = await workflow.execute_child_workflow(TypedChildCharge.run, order, id=f"{order.id}-child")
        assert isinstance(receipt, Receipt)  # the child's run method's annotation
        return receipt


async def test_a_child_workflow_takes_and_returns_typed_values_through_the_codec(cluster: Cluster) -> None:
    codec = XorZlibCodec()
    client = await Client.connect(cluster.url, data_converter=DataConverter(payload_codec=codec))
    order = _order()
    try:
        async with Worker(client, task_queue="q-typed-child", workflows=[TypedParent, TypedChildCharge],
                          activities=[charge_card]):
            receipt = await client.execute_workflow(TypedParent.run, order, id=f"parent-{order.id}",
                                                    task_queue="q-typed-child")
    finally:
        await client.close()
    assert receipt == Receipt(order.id, SECRET, Decimal("12.34"), order.placed + timedelta(seconds=1), [])
    text = await _database_text(cluster.settings.database_url)
    assert SECRET not in text and SECRET.encode().hex() not in text  # the child's input and result too
