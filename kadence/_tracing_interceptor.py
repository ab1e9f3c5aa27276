"""The SDK's OpenTelemetry spans, as an interceptor (kadence/interceptor.py).

Every Client and every Worker puts a :class:`TracingInterceptor` first in its chains:

- a worker's task runs in a span (``RunWorkflowTask <type>``, ``HandleQuery <type>``,
  ``RunActivity <type>``) parented by the task's ``traceparent``, so the answer calls made
  inside carry the context on to the frontend; a workflow task run ahead on an activity's
  result gets an INTERNAL span inside the activity's;
- a client call runs in an INTERNAL span (``StartWorkflow <type>``, ``SignalWorkflow <name>``,
  ``QueryWorkflow <name>``, ``UpdateWorkflow <name>``, ``CancelWorkflow``,
  ``TerminateWorkflow``) around its HTTP calls (the transport's CLIENT spans), which carry
  the trace to the frontend.

While tracing is off (kadence_protocol.tracing.tracer() is None) it passes everything on untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.trace import SpanKind

from kadence.interceptor import (
    CancelWorkflowInput,
    ClientOutboundInterceptor,
    Interceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    TaskKind,
    TerminateWorkflowInput,
    WorkerTaskInput,
    WorkerTaskInterceptor,
)
from kadence_protocol.tracing import context_from_traceparent, tracer

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


@contextlib.contextmanager
def _client_span(name: str, workflow_id: str) -> Iterator[None]:
    t = tracer()
    if t is None:
        yield
        return
    with t.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes={"kadence.workflow_id": workflow_id}):
        yield


class _TracedClient(ClientOutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        name = "SignalWithStartWorkflow" if input.start_signal is not None else "StartWorkflow"
        with _client_span(f"{name} {input.workflow_type}", input.id):
            return await self.next.start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        with _client_span(f"SignalWorkflow {input.signal}", input.handle.workflow_id):
            await self.next.signal_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        with _client_span(f"QueryWorkflow {input.query}", input.handle.workflow_id):
            return await self.next.query_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        with _client_span(f"UpdateWorkflow {input.update}", input.handle.workflow_id):
            return await self.next.start_workflow_update(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        with _client_span("CancelWorkflow", input.handle.workflow_id):
            await self.next.cancel_workflow(input)

    async def terminate_workflow(self, input: TerminateWorkflowInput) -> None:
        with _client_span("TerminateWorkflow", input.handle.workflow_id):
            await self.next.terminate_workflow(input)


class TracingInterceptor(Interceptor):
    """The SDK's spans of client calls and worker tasks (see the module docstring)."""

    def intercept_client(self, next: ClientOutboundInterceptor) -> ClientOutboundInterceptor:
        return _TracedClient(next)

    def intercept_task(self, next: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
        return _TracedTask(next)
