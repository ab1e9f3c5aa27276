"""Listing and counting workflow runs from the client: the answers' types and the paging."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kadence._http import Transport
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

__all__ = ["SEARCH_ATTRIBUTES_MARKER", "WorkflowExecution", "WorkflowExecutionCount", "count_workflows",
           "list_workflows", "search_attributes_json"]

DEFAULT_PAGE_SIZE = 100


def _time(ms: Any) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


@dataclass(frozen=True)
class WorkflowExecution:
    """One run as visibility lists it (a little behind history: it is fed from kadence.history)."""

    workflow_id: str
    run_id: str
    workflow_type: str | None
    task_queue: str | None
    status: str
    start_time: datetime | None
    execution_time: datetime | None
    close_time: datetime | None
    history_length: int
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    memo: dict[str, Any] | None = None
    search_attributes: dict[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the API's JSON

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkflowExecution:
        return cls(
            workflow_id=str(data["workflow_id"]), run_id=str(data["run_id"]), workflow_type=data.get("workflow_type"),
            task_queue=data.get("task_queue"), status=str(data["status"]), start_time=_time(data.get("start_time")),
            execution_time=_time(data.get("execution_time")), close_time=_time(data.get("close_time")),
            history_length=int(data.get("history_length") or 0), parent_workflow_id=data.get("parent_workflow_id"),
            parent_run_id=data.get("parent_run_id"), memo=data.get("memo"),
            search_attributes=data.get("search_attributes"), raw=dict(data),
        )


@dataclass(frozen=True)
class WorkflowExecutionCount:
    """How many runs match; with ``GROUP BY ExecutionStatus``, ``groups`` has the count per status."""

    count: int
    groups: list[tuple[list[str], int]] = field(default_factory=list)


def _typed(values: dict[str, Any] | None, datetimes: frozenset[str]) -> dict[str, Any] | None:
    """Values of ``datetime`` attributes (names in ``datetimes``) as aware datetimes; the
    API answers them as ISO 8601 text, as every other JSON value, untyped."""
    if not values or not datetimes:
        return values
    out = dict(values)
    for name in datetimes & out.keys():
        if isinstance(out[name], str):
            try:
                out[name] = datetime.fromisoformat(out[name])
            except ValueError:
                pass  # not a time after all: left as the API gave it
    return out


async def list_workflows(transport: Transport, query: str, *, page_size: int = DEFAULT_PAGE_SIZE,
                         limit: int | None = None) -> AsyncIterator[WorkflowExecution]:
    token: str | None = None
    given = 0
    datetimes: frozenset[str] | None = None  # the namespace's datetime attributes, asked once
    while True:
        answer = await transport.call("GET", "/workflows",
                                      params={"query": query, "page_size": page_size, "next_page_token": token})
        for item in answer.get("executions") or []:
            if limit is not None and given >= limit:
                return
            given += 1
            run = WorkflowExecution.from_json(item)
            if run.search_attributes:
                if datetimes is None:
                    registry = await transport.call("GET", "/search-attributes")
                    datetimes = frozenset(name for name, kind in (registry.get("custom") or {}).items()
                                          if kind == "datetime")
                run = dataclasses.replace(run, search_attributes=_typed(run.search_attributes, datetimes))
            yield run
        token = answer.get("next_page_token")
        if not token:
            return


async def count_workflows(transport: Transport, query: str) -> WorkflowExecutionCount:
    answer = await transport.call("GET", "/workflows/count", params={"query": query})
    groups = [([str(v) for v in g.get("group_values") or []], int(g["count"])) for g in answer.get("groups") or []]
    return WorkflowExecutionCount(int(answer["count"]), groups)


def search_attributes_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Search attribute values as the API takes them: datetimes as ISO 8601 (naive: UTC), lists as lists."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        elif isinstance(value, tuple | set | frozenset):
            value = sorted(value) if isinstance(value, set | frozenset) else list(value)
        out[str(name)] = value
    return out
