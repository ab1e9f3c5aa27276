"""The audit's stored status, read side: each verification (``kadence audit --dsn``) and what
it found, kept in PostgreSQL (migration 0013) so operators see the last verdict without
running one. ``latest``, ``divergences_of`` and ``run_verdict`` read them for the web UI's
audit page and run page; the audit writes them (``services/history/audit/status.py``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..read_bound import Reads
from .divergences import Divergence, RunKey


class Scope(enum.StrEnum):
    TOPIC = "topic"  # kadence.history from the beginning
    FROM_TIME = "from-time"  # from a time on (runs joined mid-history completed from PostgreSQL)


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int  # first offset read
    end: int  # the end offset seen at the start (exclusive)


@dataclass(frozen=True)
class Verification:
    id: int
    started_at: datetime
    finished_at: datetime
    scope: Scope
    from_time: datetime | None
    by_whom: str
    partitions: tuple[PartitionRange, ...]
    records: int
    runs: int
    duplicates: int
    unreadable: int
    divergences: int
    chain_breaks: int
    compared_with_postgres: bool

    @property
    def clean(self) -> bool:
        return self.divergences == 0 and self.unreadable == 0

    @property
    def chain_holds(self) -> bool:
        return self.chain_breaks == 0


def _verification(row: asyncpg.Record) -> Verification:
    ranges = row["partitions"]
    parsed = json.loads(ranges) if isinstance(ranges, str) else ranges
    return Verification(
        int(row["id"]), row["started_at"], row["finished_at"], Scope(row["scope"]), row["from_time"],
        str(row["by_whom"]), tuple(PartitionRange(int(r["partition"]), int(r["start"]), int(r["end"]))
                                   for r in parsed or []),
        int(row["records"]), int(row["runs"]), int(row["duplicates"]), int(row["unreadable"]),
        int(row["divergences"]), int(row["chain_breaks"]), bool(row["compared_with_postgres"]))


async def latest(conn: asyncpg.Connection | Reads, limit: int = 1) -> list[Verification]:
    """The most recent verifications, newest first."""
    rows = await conn.fetch("SELECT * FROM audit_verifications ORDER BY id DESC LIMIT $1", limit)
    return [_verification(r) for r in rows]


def _divergence(row: asyncpg.Record) -> Divergence:
    event_id = row["event_id"]
    return Divergence(RunKey(row["namespace"], row["workflow_id"], row["run_id"]), str(row["kind"]),
                      str(row["detail"]), None if event_id is None else int(event_id))


async def divergences_of(conn: asyncpg.Connection | Reads, verification_id: int,
                         limit: int = 1000) -> list[Divergence]:
    rows = await conn.fetch("SELECT * FROM audit_divergences WHERE verification_id = $1 ORDER BY seq LIMIT $2",
                            verification_id, limit)
    return [_divergence(r) for r in rows]


@dataclass(frozen=True)
class RunVerdict:
    """What the latest verification said about one run (it may not have seen the run)."""

    verification: Verification
    divergences: Sequence[Divergence]


async def run_verdict(conn: asyncpg.Connection | Reads, run_id: str) -> RunVerdict | None:
    """The latest verification and its divergences about ``run_id``; None when none is stored."""
    found = await latest(conn)
    if not found:
        return None
    rows = await conn.fetch("SELECT * FROM audit_divergences WHERE verification_id = $1 AND run_id = $2"
                            " ORDER BY seq LIMIT 100", found[0].id, run_id)
    return RunVerdict(found[0], [_divergence(r) for r in rows])


def to_json(v: Verification) -> dict[str, Any]:
    return {"id": v.id, "started_at": v.started_at.isoformat(), "finished_at": v.finished_at.isoformat(),
            "scope": v.scope.value, "from_time": None if v.from_time is None else v.from_time.isoformat(),
            "by": v.by_whom, "partitions": [{"partition": p.partition, "start": p.start, "end": p.end}
                                            for p in v.partitions],
            "records": v.records, "runs": v.runs, "duplicates": v.duplicates, "unreadable": v.unreadable,
            "divergences": v.divergences, "chain_breaks": v.chain_breaks, "clean": v.clean,
            "compared_with_postgres": v.compared_with_postgres}
