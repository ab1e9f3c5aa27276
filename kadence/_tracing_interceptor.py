"""The SDK's OpenTelemetry spans of a worker's tasks, as an interceptor (kadence/interceptor.py).

Every Worker puts a :class:`TracingInterceptor` first in its chain: each task runs in a span
(``RunWorkflowTask <type>``, ``HandleQuery <type>``, ``RunActivity <type>``) parented by the
task's ``traceparent``, so the answer calls made inside carry the context on to the frontend;
a workflow task run ahead on an activity's result gets an INTERNAL span inside the activity's.
While tracing is off (kadence._tracing.tracer() is None) it passes every task on untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import SpanKind

from kadence._tracing import context_from_traceparent, tracer
from kadence.interceptor import Interceptor, TaskKind, WorkerTaskInput, WorkerTaskInterceptor

__all__ = ["TracingInterceptor"]


def _task_span(kind: TaskKind, task: Mapping[str, Any], namespace: str, task_queue: str) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {
        "kadence.namespace": namespace,
        "kadence.workflow_id": str(task.get("workflow_id", "")),
        "kadence.run_id": str(task.get("run_id", "")),
        "kadence.workflow_type": str(task.get("workflow_type", "")),
        "kadence.task_queue": task_queue,
    }
    if kind is TaskKind.ACTIVITY:
        activity_type = str(task.get("activity_type", ""))
        attributes.update({"kadence.activity_type": activity_type,
                           "kadence.activity_id": str(task.get("activity_id", "")),
                           "kadence.attempt": int(task.get("attempt") or 1)})
        return f"RunActivity {activity_type}", attributes
    if kind is TaskKind.QUERY:
        attributes["kadence.query_type"] = str((task.get("query") or {}).get("query_type", ""))
        return f"HandleQuery {attributes['kadence.workflow_type']}", attributes
    attributes["kadence.attempt"] = int(task.get("attempt") or 1)
    return f"RunWorkflowTask {attributes['kadence.workflow_type']}", attributes


class _TracedTask(WorkerTaskInterceptor):
    async def run_task(self, input: WorkerTaskInput) -> None:
        t = tracer()
        if t is None:
            await self.next.run_task(input)
            return
        if input.kind is TaskKind.RAN_AHEAD:
            # Never handed out, so no dispatch parents it: it runs inside the activity's span.
            name, attributes = _task_span(TaskKind.WORKFLOW, {**input.task, "attempt": 1}, input.namespace, "")
            del attributes["kadence.task_queue"]  # the activity's queue, not necessarily the workflow's
            attributes["kadence.ran_ahead"] = True
            with t.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attributes):
                await self.next.run_task(input)
            return
        name, attributes = _task_span(input.kind, input.task, input.namespace, input.task_queue)
        parent = context_from_traceparent(input.task.get("traceparent"))
        with t.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes):
            await self.next.run_task(input)


class TracingInterceptor(Interceptor):
    """The worker's task spans (see the module docstring)."""

    def intercept_task(self, next: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
        return _TracedTask(next)
