"""The audit's stored status, write side: ``record`` stores one verification (``kadence audit
--dsn``) and its divergences in one transaction, at most ``MAX_STORED_DIVERGENCES`` of them
(the count says how many there were). Migration 0013 holds the tables; the web UI reads them
through the audit read client (``services.common.audit.verifications``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg

from services.common.audit.divergences import CHAIN_BREAK, POSTGRES_CHAIN_BREAK
from services.common.audit.verifications import Scope

from .run import AuditReport

MAX_STORED_DIVERGENCES = 10_000  # per verification: a broken cluster must not fill the database
CHAIN_KINDS = frozenset({CHAIN_BREAK, POSTGRES_CHAIN_BREAK})


def _ranges(report: AuditReport) -> list[dict[str, int]]:
    return [{"partition": p, "start": s, "end": e} for p, (s, e) in sorted(report.partitions.items())]


async def record(conn: asyncpg.Connection, report: AuditReport, *, started_at: datetime, finished_at: datetime,
                 from_time_ms: int | None, by_whom: str, compared_with_postgres: bool) -> int:
    """Store one verification and its divergences; return its id."""
    found = report.divergences
    async with conn.transaction():
        verification_id = int(await conn.fetchval(
            "INSERT INTO audit_verifications (started_at, finished_at, scope, from_time, by_whom, partitions,"
            " records, runs, duplicates, unreadable, divergences, chain_breaks, compared_with_postgres)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            started_at, finished_at, (Scope.TOPIC if from_time_ms is None else Scope.FROM_TIME).value,
            None if from_time_ms is None else datetime.fromtimestamp(from_time_ms / 1000, UTC), by_whom,
            json.dumps(_ranges(report)), report.records, report.runs, report.duplicates, len(report.unreadable),
            len(found), sum(1 for d in found if d.kind in CHAIN_KINDS), compared_with_postgres))
        await conn.executemany(
            "INSERT INTO audit_divergences (verification_id, seq, namespace, workflow_id, run_id, kind, event_id,"
            " detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [(verification_id, i, d.run.namespace, d.run.workflow_id, d.run.run_id, d.kind, d.event_id, d.detail)
             for i, d in enumerate(found[:MAX_STORED_DIVERGENCES])])
    return verification_id
