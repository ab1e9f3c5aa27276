"""Records that a Kafka client speaking the protocol itself may write but aiokafka cannot
read: a header key whose bytes are not UTF-8 (services/common/unreadable.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer

from services.common import kafka


class RawKey(str):
    """A header key whose bytes are not UTF-8: Kafka's protocol carries any bytes there, and
    a producer written against it (not the Java client) may send them."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-key"


UNREADABLE = [(RawKey("x"), b"v")]  # headers that make a record unreadable to aiokafka


@asynccontextmanager
async def raw_producer(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AIOKafkaProducer]:
    """A producer that writes a header key's bytes as its encode() gives them (the pure-Python
    batch builder), so that ``headers=UNREADABLE`` writes a record aiokafka cannot read. The
topics are the caller's to make."""
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    with monkeypatch.context() as patched:
        for module in (message_accumulator, producer):
            patched.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
        raw = kafka.new_producer(bootstrap)
        await raw.start()
        try:
            yield raw
        finally:
            await raw.stop()
