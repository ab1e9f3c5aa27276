"""Whether a partition's log really ends below a shard's stored offset.

A broker reports a partition's end offset; history compares it with the offset a shard
stored (resume.py). The development broker (Tansu) reports the base offset of the last
record batch + 1, so the stored offset of a partition read to its end is usually past
the reported end although no record was lost. The record just before the stored offset
tells the two apart: a broker that lost the partition's records no longer serves it.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from kadence_protocol.kafka_security import KafkaSecurity, client_options
from kadence_protocol.kafka_stop import stop_consumer

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 2000


async def serves_record_before(bootstrap: str, security: KafkaSecurity | None, tp: TopicPartition,
                               offset: int, *, timeout_ms: int = FETCH_TIMEOUT_MS) -> bool:
    """Whether the broker serves the record at ``offset - 1`` of ``tp`` (a throwaway
    consumer, no group). False when it does not, or cannot tell within ``timeout_ms``: then
    the caller treats the log as ending where the broker says."""
    if offset <= 0:
        return True
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none", fetch_max_wait_ms=100, **client_options(security))
    try:
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, offset - 1)
        got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
        return any(r.offset == offset - 1 for r in got.get(tp, []))
    except KafkaError as exc:  # out of range (the broker lost it), or no answer
        log.debug("%s: the record at %d is not served (%r)", tp, offset - 1, exc)
        return False
    finally:
        await stop_consumer(consumer)
