"""The dead-letter tool: list what landed on ``kadence.dlq`` and re-drive it.

A consumer that cannot take a record (undecodable, unknown schema, invalid command)
publishes a ``DeadLetter`` holding the original bytes and key. Re-driving produces those
bytes again, unchanged, to the source topic under the original key: a record fixed
upstream (a schema added, a namespace created) or one that failed for a passing reason
gets another go, and its partition is the same one it came from.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kadence_protocol import avro
from kadence_protocol.ingress_signing import IngressSigner
from kadence_protocol.kafka_security import client_options
from kadence_protocol.topics import DLQ, REQUESTS
from services.common.bounded import BoundedRead, BrokerUnreachable
from services.common.unreadable import Unreadable

__all__ = ["DeadLetterEntry", "DeadLetterNotFound", "list_dead_letters", "redrive"]

#: Header on a re-driven record naming the dead letter it came from (for tracing it back).
REDRIVE_HEADER = "kadence-redriven-from"


class DeadLetterNotFound(LookupError):
    """Offsets asked for that hold no dead letter on kadence.dlq."""

    def __init__(self, offsets: Sequence[int]) -> None:
        listed = ", ".join(map(str, offsets))
        super().__init__(f"no dead letter at offset(s) {listed} of {DLQ} (see `kadence dlq list`); nothing re-driven")
        self.offsets = tuple(offsets)


@dataclass(frozen=True)
class DeadLetterEntry:
    """One dead letter and where it sits on ``kadence.dlq``."""

    dlq_partition: int
    dlq_offset: int
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    failed_at: int  # ms since the epoch

    @property
    def where(self) -> str:
        return f"{self.source_topic}[{self.partition}]@{self.offset}"


async def list_dead_letters(bootstrap: str, *, limit: int | None = None,
                            since_offset: int = 0) -> list[DeadLetterEntry]:
    """Dead letters at or after ``since_offset`` on kadence.dlq, oldest first, at most ``limit``."""
    entries: list[DeadLetterEntry] = []
    async with BoundedRead(bootstrap, DLQ) as read:
        async for record in read:
            if record.offset < since_offset:
                continue
            if isinstance(record, Unreadable):
                # Listed, so the operator learns of it; nothing of it can be re-driven.
                entries.append(DeadLetterEntry(record.partition, record.offset, "?", -1, -1, None, b"",
                                               f"not a DeadLetter: {record.reason}", 0))
            elif record.value is not None:
                entries.append(_entry(record.partition, record.offset, record.value))
            else:
                continue
            if limit is not None and len(entries) >= limit:
                break
    return entries


def _entry(partition: int, offset: int, value: bytes) -> DeadLetterEntry:
    try:
        name, letter = avro.decode(value)
    except avro.DecodeError as exc:
        # Someone else's record on our topic: show it rather than stop the listing.
        return DeadLetterEntry(partition, offset, "?", -1, -1, None, value, f"not a DeadLetter: {exc}", 0)
    if name != "DeadLetter":
        return DeadLetterEntry(partition, offset, "?", -1, -1, None, value, f"not a DeadLetter but a {name}", 0)
    return DeadLetterEntry(partition, offset, letter["source_topic"], letter["partition"], letter["offset"],
                           letter["key"], letter["value"], letter["reason"], letter["failed_at"])


async def redrive(bootstrap: str, *, offsets: Collection[int] | None = None,
                  since_offset: int = 0) -> list[DeadLetterEntry]:
    """Re-produce dead letters to their source topics; ``offsets=None`` means every one.

    Returns the entries re-driven. Entries that are not dead letters are skipped, except
    that an offset asked for that holds no dead letter (at or after ``since_offset``) raises
    ``DeadLetterNotFound`` before anything is produced.
    """
    chosen = [e for e in await list_dead_letters(bootstrap, since_offset=since_offset)
              if e.source_topic != "?" and (offsets is None or e.dlq_offset in offsets)]
    if offsets is not None:
        # Every offset asked for or none: a typo must not pass for a partial success.
        missing = sorted(set(offsets) - {e.dlq_offset for e in chosen})
        if missing:
            raise DeadLetterNotFound(missing)
    if not chosen:
        return []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_options())
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise BrokerUnreachable(f"cannot reach the Kafka broker at {bootstrap} ({type(exc).__name__})") from None
    # A dead letter keeps no headers: the operator's principal ($KADENCE_INGRESS_PRINCIPAL and
    # $KADENCE_INGRESS_KEY) signs what goes back to kadence.requests, for protected namespaces.
    signer = IngressSigner.from_env()
    try:
        futures = []
        for e in chosen:
            headers = [(REDRIVE_HEADER, f"{DLQ}[{e.dlq_partition}]@{e.dlq_offset}".encode())]
            if signer is not None and e.source_topic == REQUESTS:
                headers += signer.headers(e.source_topic, e.key, e.value)
            futures.append(await producer.send(e.source_topic, e.value, key=e.key, headers=headers))
        for future in futures:
            await future
    finally:
        await producer.stop()
    return chosen
