"""Reading ``kadence.history`` for the audit: a finite read, decoded into a :class:`Replay`."""

from __future__ import annotations

from typing import Protocol

from kadence_protocol import avro
from services.common import kafka
from services.common.bounded import BoundedRead
from services.common.unreadable import Unreadable

from .replay import Replay


class Progress(Protocol):
    """What the audit tells a progress bar: the number of records to read, then each step."""

    def begin(self, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Silent:
    def begin(self, total: int) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


async def read_history(bootstrap: str, replay: Replay, *, from_time_ms: int | None = None,
                       progress: Progress | None = None,
                       ranges: dict[int, tuple[int, int]] | None = None) -> list[str]:
    """Fold every record of kadence.history (from a time, or from the beginning) up to the end
    offsets seen at the start into ``replay``; return descriptions of records that are not
    HistoryRecords (they belong to no run, so they are reported apart). ``ranges`` receives
    each partition's (first offset, end offset) read."""
    progress = progress or _Silent()
    unreadable: list[str] = []
    async with BoundedRead(bootstrap, kafka.HISTORY, from_time_ms=from_time_ms) as read:
        progress.begin(read.total)
        if ranges is not None:
            ranges.update({tp.partition: (read.starts[tp], end) for tp, end in read.ends.items()})
        step = 0
        async for record in read:
            step += 1
            if step == 500:  # a progress bar refreshed per record would cost more than the fold
                progress.advance(step)
                step = 0
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            if isinstance(record, Unreadable):
                unreadable.append(record.reason)
                continue
            if record.value is None:
                unreadable.append(f"{where}: no value")
                continue
            try:
                name, value = avro.decode(record.value)
            except avro.DecodeError as exc:
                unreadable.append(f"{where}: {exc}")
                continue
            if name != "HistoryRecord":
                unreadable.append(f"{where}: a {name}, not a HistoryRecord")
                continue
            replay.add_record(value, record.partition, data=record.value)
        progress.advance(step)
    return unreadable
