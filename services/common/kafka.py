"""Kafka topics, keys, partitioning, producers and the dead-letter path."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from kadence_protocol import avro
from kadence_protocol.ingress_signing import IngressSigner
from kadence_protocol.kafka_security import KafkaSecurity, client_options
from kadence_protocol.kafka_stop import stop_consumer

# The topic names and keys are the protocol's (one definition); re-exported for the services.
from kadence_protocol.topics import DLQ as DLQ
from kadence_protocol.topics import HISTORY as HISTORY
from kadence_protocol.topics import REPLIES as REPLIES
from kadence_protocol.topics import REQUESTS as REQUESTS
from kadence_protocol.topics import TASKS as TASKS
from kadence_protocol.topics import task_queue_key as task_queue_key
from kadence_protocol.topics import workflow_key as workflow_key
from kadence_protocol.tracing import tracer

from .telemetry import TracingProducer

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@functools.lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: positive murmur2 of the key modulo the count.

    aiokafka's murmur2 is pure Python and the same keys come back many times (every
    event of a workflow, every task of a queue), hence the cache.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def enqueue_keyed(producer: AIOKafkaProducer, topic: str, key: bytes,
                        value: bytes) -> tuple[int, asyncio.Future[Any]]:
    """Queue one record for its key's partition; return the partition and the future of the
    broker's answer.

    Once this returns, the record is ahead of every record the same producer queues
    later for that partition (aiokafka keeps one request in flight per broker).
    """
    partition = partition_for(key, len(await producer.partitions_for(topic)))
    future: asyncio.Future[Any] = await producer.send(topic, value, key=key, partition=partition)
    return partition, future


async def enqueue_traced(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes,
                         headers: Sequence[tuple[str, bytes]]) -> tuple[
                             int, asyncio.Future[Any], tuple[tuple[str, bytes], ...]]:
    """:func:`enqueue_keyed` of a record with trace ``headers``; also return the headers it
    went out with (the tracing producer's span in place of the caller's context), which a
    copy handed over in this process carries (services/common/colocation.py)."""
    partition = partition_for(key, len(await producer.partitions_for(topic)))
    future: asyncio.Future[Any] = await producer.send(topic, value, key=key, partition=partition,
                                                      headers=list(headers))
    return partition, future, getattr(producer, "sent_headers", tuple(headers))


def topic_layout(shards: int, task_partitions: int) -> dict[str, int]:
    return {REQUESTS: shards, HISTORY: shards, TASKS: task_partitions, REPLIES: 1, DLQ: 1}


async def ensure_topics(bootstrap: str, shards: int, task_partitions: int,
                        security: KafkaSecurity | None = None) -> list[str]:
    """Create the Kadence topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, count, 1)
            for name, count in topic_layout(shards, task_partitions).items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them first
        return [t.name for t in missing]
    finally:
        await admin.close()


async def history_topic_problem(bootstrap: str) -> str | None:
    """Why a reader of kadence.history cannot start on ``bootstrap`` (no broker, no topic), or
    None. aiokafka's own connection errors are logged at CRITICAL only meanwhile: the caller
    says it in one line."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **client_options())
    try:
        await consumer.start()
        topics = await consumer.topics()
    except KafkaError as exc:
        return f"cannot reach the Kafka broker at {bootstrap} ({type(exc).__name__}); set KADENCE_KAFKA_BOOTSTRAP"
    finally:
        await stop_consumer(consumer)
        quiet.setLevel(level)
    if HISTORY not in topics:
        return f"the broker at {bootstrap} has no {HISTORY} topic (the services create it at their start)"
    return None


class SigningProducer(TracingProducer):
    """Signs every record it sends to kadence.requests (kadence_protocol/ingress_signing.py)."""

    def __init__(self, *args: Any, signer: IngressSigner, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signer = signer

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> Any:
        if topic == REQUESTS and value is not None:
            headers = [*(headers or ()), *self.signer.headers(topic, key, value)]
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


def new_producer(bootstrap: str, security: KafkaSecurity | None = None, *, signer: IngressSigner | None = None,
                 **options: Any) -> AIOKafkaProducer:
    # acks=all: a record is acknowledged only once the broker has it. No idempotent
    # producer and no transactions: the invariants in DESIGN.md give exactly-once
    # effects without them (offsets in PostgreSQL, dedupe by request and task id).
    defaults: dict[str, Any] = {"acks": "all", "linger_ms": 0, "max_batch_size": 1 << 20}
    defaults.update(options)
    # Traces each record when tracing is on; a plain AIOKafkaProducer otherwise. With a signer,
    # its records to kadence.requests are signed (namespaces may require it: ingress_auth.py).
    if signer is not None:
        return SigningProducer(bootstrap_servers=bootstrap, signer=signer, **defaults, **client_options(security))
    return TracingProducer(bootstrap_servers=bootstrap, **defaults, **client_options(security))


Record = tuple[str, bytes, bytes, Sequence[tuple[str, bytes]]]  # topic, key, value, headers


class Published(NamedTuple):
    """Where the broker put one published record (a tuple: built for every record the relay
    publishes, half the cost of a frozen dataclass's __init__)."""

    topic: str
    partition: int
    offset: int


async def publish(producer: AIOKafkaProducer, records: Sequence[Record]) -> list[Published]:
    """Publish keyed records, in order per partition, and wait until the broker has them all;
    return where each record landed, in the order given.

    The records of each partition go into batches built here, which costs about a third
    of the CPU of handing them to ``send`` one by one. With tracing on they go one by
    one, so that each gets its producer span.
    """
    if tracer() is not None:
        futures = [await producer.send(topic, value, key=key, headers=list(headers) or None)
                   for topic, key, value, headers in records]
        answers = await asyncio.gather(*futures)
        return [Published(a.topic, a.partition, a.offset) for a in answers]
    counts: dict[str, int] = {}
    batches: dict[tuple[str, int], Any] = {}
    futures = []
    # Per record: which produce request carries it (an index into futures, filled in when its
    # batch is sent) and its place in that batch; a record's offset is the batch's base plus it.
    places: list[tuple[tuple[str, int], list[int], int]] = []
    open_batch: dict[tuple[str, int], list[int]] = {}  # the future index of each open batch, once sent
    sizes: dict[tuple[str, int], int] = {}
    # Batches bypass send(): a signing producer's records to kadence.requests are signed here.
    signer = producer.signer if isinstance(producer, SigningProducer) else None
    for topic, key, value, headers in records:
        if signer is not None and topic == REQUESTS:
            headers = [*headers, *signer.headers(topic, key, value)]
        if topic not in counts:
            counts[topic] = len(await producer.partitions_for(topic))
        tp = (topic, partition_for(key, counts[topic]))
        batch = batches.get(tp)
        if batch is None:
            batch = batches[tp] = producer.create_batch()
            open_batch[tp], sizes[tp] = [], 0
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
            # The batch is full: send it and start the next one with this record.
            open_batch[tp].append(len(futures))
            futures.append(await producer.send_batch(batch, tp[0], partition=tp[1]))
            batch = batches[tp] = producer.create_batch()
            open_batch[tp], sizes[tp] = [], 0
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit a produce batch")
        places.append((tp, open_batch[tp], sizes[tp]))
        sizes[tp] += 1
    for (topic, partition), batch in batches.items():
        open_batch[(topic, partition)].append(len(futures))
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    answers = await asyncio.gather(*futures)
    return [Published(tp[0], tp[1], answers[sent[0]].offset + index) for tp, sent, index in places]


# The largest original record a dead letter carries: a producer takes about 1 MiB per
# request, and a dead letter that cannot be produced would stop its partition.
DEAD_LETTER_MAX_VALUE = 512 * 1024


def dead_letter(
    *, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes, reason: str
) -> bytes:
    if value is not None and len(value) > DEAD_LETTER_MAX_VALUE:
        # Too large to carry: the original stays readable at its source offset until retention.
        reason = (f"{reason} (the record's {len(value)} bytes are not kept here: read them at "
                  f"{source_topic}[{partition}]@{offset})")
        value = b""
    return avro.encode(
        "DeadLetter",
        {
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "key": key,
            "value": value if value is not None else b"",
            "reason": reason,
            "failed_at": int(time.time() * 1000),
        },
    )


async def send_dead_letters(producer: AIOKafkaProducer, letters: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Publish (key, DeadLetter bytes) pairs and wait until the broker has them."""
    futures = [await producer.send(DLQ, value, key=key) for key, value in letters]
    for fut in futures:
        await fut


def faust_credentials(security: KafkaSecurity | None = None) -> Any:
    """The same settings as faust's ``broker_credentials`` (None when plain)."""
    import faust.auth

    s = security if security is not None else KafkaSecurity.from_env()
    if s.protocol.sasl:
        assert s.sasl_mechanism is not None
        return faust.auth.SASLCredentials(username=s.username, password=s.password, ssl_context=s.ssl_context(),
                                          mechanism=s.sasl_mechanism.value)
    if s.protocol.tls:
        return faust.auth.SSLCredentials(s.ssl_context())
    return None
