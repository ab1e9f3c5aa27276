"""Writes the projection's updates to the ``visibility`` table (migration 0009).

One statement per batch, or for a batch of more than ``WRITE_SLICE`` runs (a projection
catching up after a burst) one statement per slice of it in one transaction: the arguments
of a statement are built and encoded on the event loop, and those of thousands of runs held
it for milliseconds (decision 0023); the transaction keeps one commit, one WAL flush, per
batch. An update changes a row only when it brings events beyond the
row's ``last_event_id``: a redelivered batch (after a restart or a rebalance: the consumers
commit their offsets to Kafka after the write, so a crash between the two delivers again)
changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import orjson

from kadence_protocol import exact_json
from kadence_protocol.enums import RunStatus

from .projection import RunUpdate

log = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO visibility AS v (namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time,
                             execution_time, close_time, history_length, last_event_id, search_attributes,
                             parent_workflow_id, parent_run_id, memo)
SELECT ns, wid, rid, wtype, tq, COALESCE(st, $6::text), t0, te, tc, n, n, sa::jsonb, pwid, prid, mm::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::text[], $8::bigint[], $9::bigint[],
            $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[])
     AS b(ns, wid, rid, wtype, tq, st, t0, te, tc, n, sa, pwid, prid, mm)
ON CONFLICT (namespace, run_id) DO UPDATE SET
    workflow_type = COALESCE(EXCLUDED.workflow_type, v.workflow_type),
    task_queue = COALESCE(EXCLUDED.task_queue, v.task_queue),
    start_time = COALESCE(EXCLUDED.start_time, v.start_time),
    execution_time = COALESCE(EXCLUDED.execution_time, v.execution_time),
    parent_workflow_id = COALESCE(EXCLUDED.parent_workflow_id, v.parent_workflow_id),
    parent_run_id = COALESCE(EXCLUDED.parent_run_id, v.parent_run_id),
    memo = COALESCE(EXCLUDED.memo, v.memo),
    -- A status other than Running only ever comes with the close time.
    status = CASE WHEN EXCLUDED.close_time IS NULL THEN v.status ELSE EXCLUDED.status END,
    close_time = COALESCE(EXCLUDED.close_time, v.close_time),
    history_length = GREATEST(EXCLUDED.history_length, v.history_length),
    last_event_id = EXCLUDED.last_event_id,
    -- Attributes set by the batch's events replace those of the same names.
    search_attributes = CASE WHEN EXCLUDED.search_attributes IS NULL THEN v.search_attributes
                             ELSE COALESCE(v.search_attributes, '{}'::jsonb) || EXCLUDED.search_attributes END
WHERE v.last_event_id < EXCLUDED.last_event_id
"""


WRITE_SLICE = 256  # runs per statement

# What no retry will get written: the database's refusal of the data, and a value orjson cannot
# write (a memo or attributes nested past its 255 levels, produced past the checks).
_REFUSED = (asyncpg.DataError, orjson.JSONEncodeError)


async def apply(conn: asyncpg.Pool | asyncpg.Connection, updates: Sequence[RunUpdate],
                slice_runs: int = WRITE_SLICE) -> list[str]:
    """Write one batch's updates (at most one per run) in one statement, or more than
    ``slice_runs`` of them a statement per slice in one transaction; return what had to be
    left out.

    Data the database refuses whatever the retries (asyncpg.DataError: a NUL character in
    an attribute, a number out of range; or a value nested too deeply to write) must not
    hold the projection back: the batch is then written run by run, a refused run again
    without its search attributes and memo, and a run refused even so is left out. Each is
    described in the list returned (and logged).
    """
    if not updates:
        return []
    try:
        await _write_sliced(conn, updates, slice_runs)
        return []
    except _REFUSED:
        pass
    left_out: list[str] = []
    for update in updates:
        try:
            await _write(conn, [update])
            continue
        except _REFUSED as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        try:
            await _write(conn, [dataclasses.replace(update, search_attributes=None, memo=None)])
            left_out.append(f"run {update.run_id}: search attributes left out, memo too ({problem})")
        except asyncpg.DataError as exc:
            left_out.append(f"run {update.run_id}: events up to {update.last_event_id} left out ({problem}; {exc})")
    for line in left_out:
        log.error("visibility: %s", line)
    return left_out


async def _write_sliced(conn: asyncpg.Pool | asyncpg.Connection, updates: Sequence[RunUpdate], size: int) -> None:
    """``updates`` in statements of at most ``size`` runs, all in one transaction."""
    if len(updates) <= size:
        await _write(conn, updates)
        return
    async with _connection(conn) as c, c.transaction():
        for first in range(0, len(updates), size):
            await _write(c, updates[first:first + size])


@contextlib.asynccontextmanager
async def _connection(conn: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            yield c
    else:
        yield conn


async def _write(conn: asyncpg.Pool | asyncpg.Connection, updates: Sequence[RunUpdate]) -> None:
    await conn.execute(
        _UPSERT,
        [u.namespace for u in updates], [u.workflow_id for u in updates], [u.run_id for u in updates],
        [u.workflow_type for u in updates], [u.task_queue for u in updates], RunStatus.RUNNING.value,
        [None if u.status is None else u.status.value for u in updates], [u.start_time for u in updates],
        [u.execution_time for u in updates], [u.close_time for u in updates],
        [u.last_event_id for u in updates],
        [None if u.search_attributes is None else orjson.dumps(u.search_attributes).decode() for u in updates],
        [u.parent_workflow_id for u in updates], [u.parent_run_id for u in updates],
        [None if u.memo is None else exact_json.dumps(u.memo).decode() for u in updates],
    )


async def forget(conn: asyncpg.Pool | asyncpg.Connection, namespace: str | None = None) -> int:
    """Delete the rows (of one namespace, or all) before a rebuild from the topic; return how many."""
    status = await conn.execute("DELETE FROM visibility WHERE $1::text IS NULL OR namespace = $1", namespace)
    return int(status.split()[-1])
