"""List and count workflow runs from the ``visibility`` table: the frontend's side of visibility."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from kadence_protocol import exact_json

from ..read_bound import BoundedReads
from ..read_budgets import ReadBudgets
from .sql import BUILT_INS, AttributeType, QueryError, compile_count, compile_list, encode_token

# The custom search attributes a namespace may register. Each is a key every list and count
# of the namespace may name and the registry every start's attributes are checked against,
# read whole on each (an unbounded registry grew every such call with it).
MAX_SEARCH_ATTRIBUTES = 100


@dataclass(frozen=True)
class Page:
    executions: list[dict[str, Any]]
    next_page_token: str | None


class VisibilityReads:
    def __init__(self, pool: asyncpg.Pool, *, read_timeout: float | None = None,
                 budgets: ReadBudgets | None = None) -> None:
        """``read_timeout``: the bound of each read (services/common/read_bound.py; None:
        none), and ``budgets`` the shares of the pool they wait for (read_budgets.py);
        registering an attribute, a write, is never bounded."""
        self._pool = pool
        self._reads: asyncpg.Pool | BoundedReads = (
            pool if read_timeout is None else BoundedReads(pool, read_timeout, budgets=budgets))

    async def search_attributes(self, namespace: str) -> dict[str, AttributeType]:
        """The custom search attributes registered in ``namespace``, with their types."""
        rows = await self._reads.fetch("SELECT name, type FROM search_attributes WHERE namespace = $1", namespace)
        return {r["name"]: AttributeType(r["type"]) for r in rows}

    async def register(self, namespace: str, name: str, kind: AttributeType) -> bool:
        """Register a custom search attribute; False if it exists already (with this type).
        A namespace holds at most MAX_SEARCH_ATTRIBUTES (QueryError past it)."""
        if name in BUILT_INS:
            raise QueryError(f"{name} is a built-in search attribute")
        async with self._pool.acquire() as conn, conn.transaction():
            # Registrations of one namespace one at a time, so two at the limit cannot both
            # pass the count (a transaction's lock: released at its end, nothing left on the
            # pooled connection).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"kadence.search_attributes/{namespace}")
            existing = await conn.fetchval(
                "SELECT type FROM search_attributes WHERE namespace = $1 AND name = $2", namespace, name)
            if existing is not None:
                if existing != kind.value:
                    raise QueryError(f"search attribute {name} is registered already as {existing},"
                                     f" not {kind.value}")
                return False
            held = await conn.fetchval("SELECT count(*) FROM search_attributes WHERE namespace = $1", namespace)
            if held >= MAX_SEARCH_ATTRIBUTES:
                raise QueryError(f"namespace {namespace!r} holds {held} custom search attributes, the most it"
                                 f" takes ({MAX_SEARCH_ATTRIBUTES}); {name} is not registered")
            await conn.execute("INSERT INTO search_attributes (namespace, name, type) VALUES ($1, $2, $3)",
                               namespace, name, kind.value)
        return True

    async def list(self, namespace: str, query: str, *, page_size: int, token: str | None) -> Page:
        custom = await self.search_attributes(namespace)
        statement = compile_list(namespace, query, custom, page_size=page_size, token=token)
        rows = await self._reads.fetch(statement.sql, *statement.params)
        next_token = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_token = encode_token(namespace, query, [last[f"sort_{i}"] for i in range(len(statement.sort_keys))])
        return Page([execution(r) for r in rows], next_token)

    async def count(self, namespace: str, query: str) -> dict[str, Any]:
        custom = await self.search_attributes(namespace)
        statement, grouped = compile_count(namespace, query, custom)
        rows = await self._reads.fetch(statement.sql, *statement.params)
        if not grouped:
            return {"count": int(rows[0]["count"])}
        groups = [{"group_values": [r["value"]], "count": int(r["count"])} for r in rows]
        return {"count": sum(g["count"] for g in groups), "groups": groups}

def execution(row: Mapping[str, Any]) -> dict[str, Any]:
    """A visibility row as the API answers it (times in ms since the epoch, as describe's)."""
    return {
        "workflow_id": row["workflow_id"], "run_id": row["run_id"], "workflow_type": row["workflow_type"],
        "task_queue": row["task_queue"], "status": row["status"], "start_time": row["start_time"],
        "execution_time": row["execution_time"], "close_time": row["close_time"],
        "history_length": row["history_length"], "parent_workflow_id": row["parent_workflow_id"],
        "parent_run_id": row["parent_run_id"],
        "memo": None if row["memo"] is None else exact_json.loads(row["memo"]),
        "search_attributes": None if row["search_attributes"] is None else orjson.loads(row["search_attributes"]),
    }
