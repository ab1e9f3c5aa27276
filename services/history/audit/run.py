"""One audit run: read kadence.history, fold, check against PostgreSQL, optionally rebuild."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import asyncpg

from services.common import outage
from services.common.bounded import TopicReadError
from services.common.db import without_password

from . import pg
from .errors import AuditError
from .replay import Divergence, Replay
from .source import Progress, read_history


@dataclass(frozen=True)
class AuditReport:
    records: int                         # HistoryRecords read
    runs: int                            # runs seen on the topic
    duplicates: int                      # harmless repeated deliveries
    divergences: tuple[Divergence, ...]
    unreadable: tuple[str, ...]          # records of kadence.history that are not HistoryRecords
    seeded: int = 0                      # runs joined mid-history and completed from PostgreSQL
    rebuilt: Mapping[str, int] = field(default_factory=dict)
    partitions: Mapping[int, tuple[int, int]] = field(default_factory=dict)  # (first offset, end) read

    @property
    def clean(self) -> bool:
        return not self.divergences and not self.unreadable

    @property
    def workflows(self) -> list[tuple[str, str]]:
        """(namespace, workflow_id) of every workflow with a divergence."""
        return sorted({(d.run.namespace, d.run.workflow_id) for d in self.divergences})


async def audit(bootstrap: str, dsn: str | None, *, from_time_ms: int | None = None,
                rebuild_into: str | None = None, progress: Progress | None = None) -> AuditReport:
    """Replay kadence.history and report every divergence (see services.history.audit.replay).

    Without ``dsn`` only the topic itself is checked (gaps, duplicates, chain, fold).
    """
    replay = Replay()
    ranges: dict[int, tuple[int, int]] = {}
    try:
        unreadable = await read_history(bootstrap, replay, from_time_ms=from_time_ms, progress=progress,
                                        ranges=ranges)
    except TopicReadError as exc:
        raise AuditError(str(exc)) from exc
    seeded = 0
    compared: list[Divergence] = []
    if dsn is not None:
        async with _database(dsn, "--dsn"):
            conn = await asyncpg.connect(dsn)
            try:
                if from_time_ms is not None:
                    seeded = await pg.seed_partial_runs(conn, replay)
                replay.finish()
                compared = await pg.compare(conn, replay, whole_topic=from_time_ms is None)
            finally:
                await conn.close()
    else:
        replay.finish()
    rebuilt: Mapping[str, int] = {}
    if rebuild_into is not None:
        async with _database(rebuild_into, "--rebuild-into"):
            rebuilt = await pg.rebuild_into(rebuild_into, replay)
    return AuditReport(
        records=replay.records, runs=len(replay.runs),
        duplicates=sum(a.duplicates for a in replay.runs.values()),
        divergences=tuple(replay.divergences() + compared), unreadable=tuple(unreadable),
        seeded=seeded, rebuilt=rebuilt, partitions=ranges)


@contextlib.asynccontextmanager
async def _database(dsn: str, option: str) -> AsyncIterator[None]:
    """Database failures as one ``AuditError`` naming the option and the database (no password)."""
    try:
        yield
    except outage.DATABASE_ERRORS as exc:
        raise AuditError(f"cannot use the database of {option} ({without_password(dsn)}):"
                         f" {type(exc).__name__}: {exc}") from None

