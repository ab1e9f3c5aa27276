"""The 12 s stall of a burst of signals (issue 15, item 15), on the real broker and database.

500 concurrent signals to one workflow in `kadence dev` took 12.6 s in about a third of
fresh starts: the frontend's producer sent the burst as one record batch, the shard took
the first commands handed over and the rest were dropped (its inbox was full, while the
partition was being fetched), and the fetch gate then paused the partition, because the
development broker reports a log end of the last batch's base offset + 1 (5, with 503
records). The commands waited untaken until the next command arrived (a workflow task
timeout, 12 s later). This test builds that state directly: one batch, the first commands
handed over, the rest dropped, the partition paused, and checks that every command is
applied anyway, and promptly.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition

from kadence_protocol import avro
from services.common import kafka
from services.history import gate
from services.history.neighbours import HandedCommand

from .history_harness import SHARDS, Topics, history_of, history_running, start_record, until

pytestmark = pytest.mark.timeout(60)

BURST = 200
HANDED = 20  # the commands of the burst hand-over brings before the shard's inbox is full


def _signal(workflow_id: str, payload: str) -> bytes:
    return avro.encode("SignalWorkflowExecution", {
        "namespace": "default", "workflow_id": workflow_id, "run_id": None, "signal_name": "s", "input": payload,
        "request_id": "", "identity": "t", "reply_to": ""})


async def _signals_applied(dsn: str, run_id: str) -> int:
    return sum(e["event_type"] == "WorkflowExecutionSignaled" for e in await history_of(dsn, run_id))


async def test_a_burst_sent_as_one_batch_and_partly_handed_over_is_applied_whole(
        broker: Any, fresh_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "QUIET_S", 0.05)  # a partition that fetched records may pause soon after
    async with history_running(broker.bootstrap, fresh_dsn) as service, Topics(broker.bootstrap) as io:
        wid = "wf-burst"
        start = start_record(wid)
        await io.send("StartWorkflowExecution", start)
        run_id = (await io.next("kadence.replies", request_id=start["request_id"]))["run_id"]
        key = kafka.workflow_key("default", wid)
        tp = TopicPartition(kafka.REQUESTS, kafka.partition_for(key, SHARDS))
        # One command handed over, as the frontend in this process does: the gate starts, and
        # the partition, all taken, is paused.
        value = _signal(wid, "[-1]")
        service.take_queued(tp.partition, key, value, (), await io.producer.send(kafka.REQUESTS, value, key=key,
                                                                             partition=tp.partition))
        await until(lambda: tp in service._consumer.paused())

        # The burst, queued back to back (so the producer sends it as one record batch) and
        # handed over as the frontend does. Hand-over brings the first commands; the shard
        # drops the rest (a full inbox), and the fetch it asked for then was no use: the
        # partition was being fetched, and paused afterwards. That is the state the stall
        # came from.
        shard = service.shards[tp.partition]
        first = shard.consumed  # everything before is taken
        offer = shard.offer

        def offer_first(command: HandedCommand) -> None:
            if command.offset < first + HANDED:
                offer(command)

        monkeypatch.setattr(shard, "offer", offer_first)
        acks = []
        for i in range(BURST):
            value = _signal(wid, f"[{i}]")
            acks.append(await io.producer.send(kafka.REQUESTS, value, key=key, partition=tp.partition))
            service.take_queued(tp.partition, key, value, (), acks[-1])
        assert [(await ack).offset for ack in acks] == list(range(first, first + BURST))
        end = (await service._consumer.end_offsets([tp]))[tp]
        assert end < first + BURST  # the development broker's answer: not the real end
        await until(lambda: shard.consumed >= first + HANDED)

        # Every command is applied, well within the 10 s a workflow task timeout would take to
        # bring another command along.
        async def all_applied() -> bool:
            return await _signals_applied(fresh_dsn, run_id) == BURST + 1

        await until(all_applied, seconds=3)
