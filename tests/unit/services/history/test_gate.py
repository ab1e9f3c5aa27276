"""The fetch gate's decisions (services/history/gate.py), against a stand-in consumer and shards.

The development broker answers ListOffsets with its last record batch's base offset + 1:
after a burst of commands sent as one batch, its "end" lies far below the real one. The
gate must not pause a partition whose shard has not taken the commands this process knows
the broker acknowledged (that pause held 435 signals for 12 s, issue 15 item 15).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.common import kafka
from services.history import gate
from services.history.gate import FetchGate

pytestmark = pytest.mark.timeout(10)

TP = TopicPartition(kafka.REQUESTS, 1)


class FakeConsumer:
    def __init__(self) -> None:
        self._paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, tp: TopicPartition) -> None:
        self._paused.add(tp)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset


class FakeShard:
    def __init__(self, consumed: int) -> None:
        self.consumed = consumed
        self.fetched_at = 0.0  # fetched nothing for long: quiet
        self.lost = asyncio.Event()
        self.idle = True

    def settled(self) -> bool:
        return self.idle


def _gate(consumed: int) -> tuple[FetchGate, FakeConsumer, FakeShard]:
    consumer, shard = FakeConsumer(), FakeShard(consumed)
    shards: dict[int, Any] = {TP.partition: shard}
    return FetchGate(consumer, shards), consumer, shard  # type: ignore[arg-type]


def test_a_partition_is_not_paused_while_acknowledged_commands_wait_untaken() -> None:
    g, consumer, _ = _gate(consumed=68)
    for offset in range(4, 503):  # one burst, one record batch at 4..502
        g.acked(TP.partition, offset)
    g.look({TP: 5}, now=100.0)  # what the development broker answers for that log
    assert TP not in consumer.paused()


def test_a_partition_paused_over_untaken_commands_is_fetched_at_the_next_look() -> None:
    g, consumer, _ = _gate(consumed=68)
    consumer.pause(TP)  # paused by an earlier look, before the burst's acknowledgements
    for offset in range(4, 503):
        g.acked(TP.partition, offset)
    g.look({TP: 5}, now=100.0)
    assert TP not in consumer.paused() and consumer.positions[TP] == 68


def test_a_partition_whose_shard_took_everything_is_paused() -> None:
    g, consumer, _ = _gate(consumed=503)
    g.acked(TP.partition, 502)
    g.look({TP: 5}, now=100.0)
    assert TP in consumer.paused()


def test_records_waiting_untaken_while_the_shard_idles_are_logged_at_info_once(
        caplog: pytest.LogCaptureFixture) -> None:
    g, consumer, shard = _gate(consumed=68)
    g.acked(TP.partition, 502)
    with caplog.at_level(logging.INFO, logger=gate.__name__):
        for t in (100.0, 100.5, 101.0 + gate.STALL_LOG_S, 102.0 + gate.STALL_LOG_S):
            consumer.pause(TP)  # as if the fetch brought nothing: the wait goes on
            g.look({TP: 5}, now=t)
    waits = [r for r in caplog.records if "wait untaken" in r.getMessage()]
    assert len(waits) == 1 and waits[0].levelno == logging.INFO
    assert "records 68..502" in waits[0].getMessage()
    # Progress ends the wait; a new one is logged again.
    shard.consumed = 100
    with caplog.at_level(logging.INFO, logger=gate.__name__):
        g.look({TP: 5}, now=200.0)
        g.look({TP: 5}, now=200.0 + gate.STALL_LOG_S)
    assert len([r for r in caplog.records if "wait untaken" in r.getMessage()]) == 2
