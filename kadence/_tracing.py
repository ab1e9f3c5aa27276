"""The SDK's own spans (a worker's task spans), over the trace context of
``kadence_protocol.tracing`` (the active tracer and W3C propagation shared with the services,
re-exported here for the SDK's modules)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from opentelemetry.trace import SpanKind

from kadence_protocol.tracing import (
    TRACE_HEADERS,
    UNSET,
    Unset,
    configure,
    context_from_headers,
    context_from_traceparent,
    current_traceparent,
    http_headers,
    kafka_headers,
    record_status_code,
    tracer,
    use_traceparent,
)

__all__ = [
    "TRACE_HEADERS",
    "UNSET",
    "Unset",
    "configure",
    "context_from_headers",
    "context_from_traceparent",
    "current_traceparent",
    "http_headers",
    "kafka_headers",
    "ran_ahead_span",
    "record_status_code",
    "traced_task",
    "tracer",
    "use_traceparent",
]


# ---- the worker's task spans ---------------------------------------------------------------


def _task_span(kind: str, task: Mapping[str, Any], namespace: str, task_queue: str) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {
        "kadence.namespace": namespace,
        "kadence.workflow_id": str(task.get("workflow_id", "")),
        "kadence.run_id": str(task.get("run_id", "")),
        "kadence.workflow_type": str(task.get("workflow_type", "")),
        "kadence.task_queue": task_queue,
    }
    if kind == "activity":
        activity_type = str(task.get("activity_type", ""))
        attributes.update({"kadence.activity_type": activity_type,
                           "kadence.activity_id": str(task.get("activity_id", "")),
                           "kadence.attempt": int(task.get("attempt") or 1)})
        return f"RunActivity {activity_type}", attributes
    query = task.get("query")
    if query:
        attributes["kadence.query_type"] = str(query.get("query_type", ""))
        return f"HandleQuery {attributes['kadence.workflow_type']}", attributes
    attributes["kadence.attempt"] = int(task.get("attempt") or 1)
    return f"RunWorkflowTask {attributes['kadence.workflow_type']}", attributes


def traced_task(
    kind: str, process: Callable[[Mapping[str, Any]], Awaitable[None]], *, namespace: str, task_queue: str,
) -> Callable[[Mapping[str, Any]], Awaitable[None]]:
    """Wrap a worker's task processor so each task runs in a span parented by the task's
    ``traceparent``; the respond calls made inside carry the context on to the frontend."""

    async def run(task: Mapping[str, Any]) -> None:
        t = tracer()
        if t is None:
            await process(task)
            return
        name, attributes = _task_span(kind, task, namespace, task_queue)
        parent = context_from_traceparent(task.get("traceparent"))
        with t.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes):
            await process(task)

    return run


@contextlib.contextmanager
def ran_ahead_span(task: Mapping[str, Any], namespace: str) -> Iterator[None]:
    """A span for a workflow task run ahead on an activity's result, inside the activity's
    span (the task was never handed out, so no dispatch parents it)."""
    t = tracer()
    if t is None:
        yield
        return
    name, attributes = _task_span("workflow", {**task, "attempt": 1}, namespace, "")
    del attributes["kadence.task_queue"]  # the activity's queue, not necessarily the workflow's
    attributes["kadence.ran_ahead"] = True
    with t.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attributes):
        yield
