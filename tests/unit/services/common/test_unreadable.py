"""services/common/unreadable.py: the record standing for one the Kafka client cannot unpack."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiokafka.structs import TopicPartition

from services.common.unreadable import Unreadable, unreadable


def test_it_names_where_the_record_is_and_why_and_carries_nothing_of_it() -> None:
    exc = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    record = unreadable(TopicPartition("kadence.requests", 3), 41, exc)
    assert (record.partition, record.offset, record.key, record.value, record.headers) == (3, 41, None, None, ())
    assert "kadence.requests[3]@41" in record.reason and "not UTF-8" in record.reason


def test_a_copy_with_other_headers_keeps_its_reason() -> None:
    # The tracing wrapper replaces a record's headers (services/history/telemetry.py).
    record = unreadable(TopicPartition("kadence.requests", 0), 1, ValueError("x"))
    changes: dict[str, Any] = {"headers": (("traceparent", b"00-..."),)}
    copy = dataclasses.replace(record, **changes)
    assert isinstance(copy, Unreadable) and copy.reason == record.reason
