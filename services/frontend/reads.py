"""Reads straight from PostgreSQL: runs (their columns and the summary history writes for the
frontend, ``executions.summary``: services/history/summary.py), and history pages. History's
snapshot (``executions.state``) is its own and never read here.

The reads a caller asks for (describe, history pages, result waits, statuses) are bounded
(services/common/read_bound.py): a PostgreSQL that stops answering gets the caller a 503
with Retry-After, not a wait as long as the outage. The update requests read into a
workflow task's answer are not: the task is handed out by then, and an error would lose it
until its timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kadence_protocol import avro, exact_json
from services.common import db
from services.common.outcome import RUNNING
from services.common.outcome import outcome as outcome_of
from services.common.read_bound import DEFAULT_TIMEOUT_S, BoundedReads
from services.common.read_budgets import ReadBudgets

from .errors import WorkflowNotFound
from .status_reads import ReadsTogether, RunKey, StatusReads


@dataclass(frozen=True)
class Execution:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    row_status: str
    start_time: int
    close_time: int | None
    next_event_id: int
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or self.row_status)

    @property
    def closed(self) -> bool:
        return self.status != RUNNING


# Every column but the snapshot (history's own, and the largest).
_COLUMNS = ", ".join(f"e.{c}" for c in ("namespace", "workflow_id", "run_id", "workflow_type", "task_queue", "status",
                                         "start_time", "close_time", "next_event_id", "summary"))


class ReadStore:
    def __init__(self, pool: db.Pool, *, read_timeout: float = DEFAULT_TIMEOUT_S,
                 budgets: ReadBudgets | None = None) -> None:
        self._pool = pool
        self._bounded = BoundedReads(pool, read_timeout, budgets=budgets)
        self._statuses = StatusReads(self.statuses)
        self._runs: ReadsTogether[RunKey, Execution] = ReadsTogether(self.executions)

    async def execution(self, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
        return _execution(await self._bounded.fetchrow(*_execution_query(namespace, workflow_id, run_id)),
                          namespace, workflow_id, run_id)

    async def waited_execution(self, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
        """As :meth:`execution`, for a result wait: reads made at once share a query
        (status_reads.py), so a crowd of waits woken together reads their runs in a few."""
        found = await self._runs.read((namespace, workflow_id, run_id or ""))
        if found is None:
            raise _not_found(namespace, workflow_id, run_id)
        return found

    async def executions(self, keys: Sequence[RunKey]) -> dict[RunKey, Execution]:
        """The run each (namespace, workflow id, run id) names, or its workflow's current run
        where the run id is empty, in one query; a key that names no run is left out."""
        # One primary-key probe per key, as statuses does.
        rows = await self._bounded.fetch(
            "SELECT k.namespace AS key_namespace, k.workflow_id AS key_workflow_id, k.run_id AS key_run_id, x.*"
            " FROM unnest($1::text[], $2::text[], $3::text[]) AS k (namespace, workflow_id, run_id)"
            f" CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM executions e"
            "   WHERE e.run_id = COALESCE(NULLIF(k.run_id, ''), (SELECT c.run_id FROM current_executions c"
            "     WHERE c.namespace = k.namespace AND c.workflow_id = k.workflow_id))"
            "   AND e.namespace = k.namespace AND e.workflow_id = k.workflow_id LIMIT 1) AS x",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        return {(r["key_namespace"], r["key_workflow_id"], r["key_run_id"]):
                _execution(r, r["key_namespace"], r["key_workflow_id"], r["key_run_id"] or None) for r in rows}

    async def history_page(self, namespace: str, workflow_id: str, run_id: str | None, first: int,
                           limit: int) -> tuple[Execution, list[dict[str, Any]]]:
        """The run (as :meth:`execution`) and its events from ``first`` on, at most ``limit``,
        read on one connection: a replay's page waits for a connection once, not twice."""

        async def read(con: Any, left: float) -> tuple[Any, list[Any]]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + left
            row = await con.fetchrow(*_execution_query(namespace, workflow_id, run_id), timeout=left)
            if row is None:
                return None, []
            return row, await con.fetch(_EVENTS, row["run_id"], first, None, limit,
                                        timeout=max(deadline - loop.time(), 0.001))

        row, rows = await self._bounded.run(read)
        return _execution(row, namespace, workflow_id, run_id), [event_json(bytes(r["data"])) for r in rows]

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str | None:
        """The status column of a run (None if there is no such run): cheaper than its whole state.
        Reads made at once share a query (status_reads.py)."""
        return await self._statuses.status(namespace, workflow_id, run_id)

    async def statuses(self, keys: Sequence[RunKey]) -> dict[RunKey, str]:
        """The status column of each (namespace, workflow id, run id) that names a run, in one query."""
        # One primary-key probe per key (LATERAL ... LIMIT 1): a join may get a plan made
        # while the table was small, a scan of it all (see services/history/store.py).
        rows = await self._bounded.fetch(
            "SELECT k.namespace, k.workflow_id, k.run_id, x.status"
            " FROM unnest($1::text[], $2::text[], $3::text[]) AS k (namespace, workflow_id, run_id)"
            " CROSS JOIN LATERAL (SELECT status FROM executions WHERE run_id = k.run_id"
            "   AND namespace = k.namespace AND workflow_id = k.workflow_id LIMIT 1) AS x",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        return {(r["namespace"], r["workflow_id"], r["run_id"]): str(r["status"]) for r in rows}

    async def update_requests(self, run_id: str) -> list[dict[str, Any]]:
        """The run's update requests that wait for the workflow (services/history/updates.py),
        oldest first: update_id, name, input."""
        # Most runs have none: the summary (canonical JSON) is shipped only when its
        # update_requests is not empty.
        data = await self._pool.fetchval(
            "SELECT summary FROM executions WHERE run_id = $1 AND position($2::bytea in summary) = 0",
            run_id, b'"update_requests":[]')
        if data is None:
            return []
        return list(orjson.loads(data).get("update_requests") or [])

    async def update_requests_of(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`update_requests` of several runs in one query (a poll's answer): by run id,
        only the runs that have some."""
        rows = await self._pool.fetch(
            "SELECT run_id, summary FROM executions WHERE run_id = ANY($1::text[])"
            " AND position($2::bytea in summary) = 0",
            list(dict.fromkeys(run_ids)), b'"update_requests":[]')
        found = {str(r["run_id"]): list(orjson.loads(r["summary"]).get("update_requests") or []) for r in rows}
        return {run_id: requests for run_id, requests in found.items() if requests}

    async def reset_runs(self, namespace: str, workflow_id: str, run_id: str) -> list[str]:
        """The runs reset from ``run_id`` (services/history/reset.py), at most 100, by run id
        (a reset run keeps the start time of the run it copied: no order by time)."""
        rows = await self._bounded.fetch(
            "SELECT run_id FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id <> $3"
            " AND convert_from(state, 'UTF8')::jsonb ->> 'reset_from_run_id' = $3 ORDER BY run_id LIMIT 100",
            namespace, workflow_id, run_id)
        return [str(r["run_id"]) for r in rows]

    async def events(self, run_id: str, first: int, last: int | None, limit: int) -> list[dict[str, Any]]:
        """Events of a run with first <= event_id (<= last), in order, at most ``limit``."""
        rows = await self._bounded.fetch(_EVENTS, run_id, first, last, limit)
        return [event_json(bytes(r["data"])) for r in rows]


_EVENTS = ("SELECT data FROM history_events WHERE run_id = $1 AND event_id >= $2"
           " AND ($3::bigint IS NULL OR event_id <= $3) ORDER BY event_id LIMIT $4")


def _execution_query(namespace: str, workflow_id: str, run_id: str | None) -> tuple[Any, ...]:
    """The query of a run's row, and its arguments: the run named, or the workflow's current one."""
    if run_id:
        return (f"SELECT {_COLUMNS} FROM executions e WHERE e.run_id = $1 AND e.namespace = $2 AND e.workflow_id = $3",
                run_id, namespace, workflow_id)
    return (f"SELECT {_COLUMNS} FROM current_executions c JOIN executions e ON e.run_id = c.run_id"
            " WHERE c.namespace = $1 AND c.workflow_id = $2", namespace, workflow_id)


def _not_found(namespace: str, workflow_id: str, run_id: str | None) -> WorkflowNotFound:
    which = f"run {run_id} of workflow" if run_id else "workflow"
    return WorkflowNotFound(f"{which} {workflow_id!r} was not found in namespace {namespace!r}",
                            field="run_id" if run_id else "workflow_id")


def _execution(row: Any, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
    if row is None:
        raise _not_found(namespace, workflow_id, run_id)
    try:
        summary = orjson.loads(bytes(row["summary"])) if row["summary"] else {}
    except orjson.JSONDecodeError:
        summary = {}
    return Execution(
        namespace=row["namespace"], workflow_id=row["workflow_id"], run_id=row["run_id"],
        workflow_type=row["workflow_type"], task_queue=row["task_queue"], row_status=row["status"],
        start_time=int(row["start_time"]),
        close_time=None if row["close_time"] is None else int(row["close_time"]),
        next_event_id=int(row["next_event_id"]), summary=summary if isinstance(summary, dict) else {},
    )


def event_json(data: bytes) -> dict[str, Any]:
    _, event = avro.decode(data)
    return event


def describe(ex: Execution) -> dict[str, Any]:
    state = ex.summary
    activities = state.get("activities") or {}
    timers = state.get("timers") or {}
    return {
        "workflow_id": ex.workflow_id,
        "run_id": ex.run_id,
        "workflow_type": ex.workflow_type,
        "task_queue": ex.task_queue,
        "status": ex.status,
        "start_time": ex.start_time,
        "close_time": ex.close_time,
        "history_length": ex.next_event_id - 1,
        "new_run_id": state.get("new_run_id"),
        "reset_from_run_id": state.get("reset_from_run_id"),
        # Null unless terminated (and for a row last written before the summary kept it).
        "terminate_reason": state.get("terminate_reason"),
        # A Failed run's failure (message, type, cause...) and a Canceled run's details (JSON
        # text), as result() answers them; null otherwise. Every summary has carried both.
        "failure": state.get("failure"),
        "cancel_details": state.get("cancel_details"),
        "memo": exact_json.loads(state["memo"]) if state.get("memo") else None,
        # The start's with the workflow's upserts merged in (null: none, or a row not
        # written since search attributes joined the summary).
        "search_attributes": orjson.loads(state["search_attributes"]) if state.get("search_attributes") else None,
        "history_size_bytes": state.get("history_size_bytes", 0),
        "attempt": state.get("attempt", 1),  # under the workflow retry policy (services/history/retry.py)
        "pending_activities": [
            {"scheduled_event_id": int(k), **v} for k, v in sorted(activities.items(), key=lambda kv: int(kv[0]))
        ],
        "pending_timers": [{"timer_id": k, **v} for k, v in sorted(timers.items())],
        # Child workflows not closed yet (state Initiated until the child's start is recorded).
        "pending_children": [{"initiated_event_id": int(k), **v} for k, v in
                             sorted((state.get("children") or {}).items(), key=lambda kv: int(kv[0]))],
        # The outstanding or failing workflow task: its attempt and last failure (null: none).
        "workflow_task": state.get("workflow_task"),
    }


def outcome(ex: Execution) -> dict[str, Any]:
    """The result answer of a closed run (or ``{"status": "Running"}``)."""
    return outcome_of(ex.status, ex.run_id, ex.summary)
