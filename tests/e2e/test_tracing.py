"""One trace per workflow: spans from the SDK client, frontend, Kafka, history, matching and worker.

The tracer provider (with an in-memory exporter) is installed through
``telemetry.configure`` before the cluster starts, and removed afterwards, so the other
tests in this process run untraced.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kadence import Client, Worker, activity, workflow
from services.common import telemetry
from tests.helpers import eventually
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(60)


@activity.defn
async def traced_greeting(name: str) -> str:
    return f"Hello, {name}!"


@workflow.defn
class TracedWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(traced_greeting, name, start_to_close_timeout=timedelta(seconds=10))


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    """Autouse, so it is set up before the cluster fixture starts the services."""
    with in_memory_spans() as exporter:
        yield exporter


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> list[ReadableSpan]:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert found, f"no {kind.name} span {name!r} among {sorted({s.name for s in spans})}"
    return found


async def test_one_trace_covers_every_service(client: Client, spans: InMemorySpanExporter) -> None:
    wid = f"traced-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-traced", workflows=[TracedWorkflow], activities=[traced_greeting]):
        handle = await client.start_workflow(TracedWorkflow.run, "trace", id=wid, task_queue="q-traced")
        assert await handle.result() == "Hello, trace!"
    # The last spans end as their producer acknowledgements come in: look until the whole
    # trace is there (an assertion not yet true is looked at again).
    def whole_trace() -> bool:
        finished = list(spans.get_finished_spans())
        start = next((s for s in finished if s.kind == SpanKind.CLIENT and s.attributes is not None
                      and str(s.attributes.get("url.full", "")).endswith("/workflows")), None)
        assert start is not None, "no client span for the start"
        trace_id = start.context.trace_id
        trace = [s for s in finished if s.context.trace_id == trace_id]

        server = _one(trace, "POST /api/v1/namespaces/{namespace}/workflows", SpanKind.SERVER)[0]
        assert server.parent is not None and server.parent.span_id == start.context.span_id
        assert server.attributes is not None
        assert server.attributes["http.request.method"] == "POST"
        assert server.attributes["http.route"] == "/api/v1/namespaces/{namespace}/workflows"
        assert server.attributes["http.response.status_code"] == 201

        sends = _one(trace, "send kadence.requests", SpanKind.PRODUCER)
        first = sends[0]
        assert first.parent is not None and first.parent.span_id == server.context.span_id
        attrs = first.attributes or {}
        assert attrs["messaging.system"] == "kafka"
        assert attrs["messaging.destination.name"] == "kadence.requests"
        assert attrs["messaging.operation.type"] == "publish"
        assert attrs["messaging.kafka.message.key"] == f"default/{wid}"
        assert "messaging.destination.partition.id" in attrs and "messaging.kafka.offset" in attrs

        history = _one(trace, "process kadence.requests", SpanKind.CONSUMER)
        started = next((s for s in history if s.parent is not None and s.parent.span_id == first.context.span_id), None)
        assert started is not None, "no history span for the start's record"
        attrs = started.attributes or {}
        assert attrs["messaging.operation.type"] == "process"
        assert attrs["messaging.consumer.group.name"] == "kadence-history"
        assert attrs["kadence.workflow_id"] == wid and attrs["kadence.run_id"] == handle.run_id
        assert attrs["kadence.workflow_type"] == "TracedWorkflow" and attrs["kadence.task_queue"] == "q-traced"
        # Start, workflow task completed, activity completed with the next workflow task run
        # ahead: the tasks are answered before their held-back started records would be sent.
        assert len(history) >= 3

        # The cluster is one process: traced, it takes the co-located path as untraced (the tasks
        # are handed to matching after commit, not published), and the trace goes on across it.
        assert not [s for s in trace if s.name == "send kadence.tasks"]
        dispatches = _one(trace, "process kadence.tasks", SpanKind.CONSUMER)
        assert all((d.attributes or {}).get("kadence.handed_over") is True for d in dispatches)
        history_ids = {h.context.span_id for h in history}
        assert all(d.parent is not None and d.parent.span_id in history_ids for d in dispatches)
        assert any(d.parent is not None and d.parent.span_id == started.context.span_id for d in dispatches)
        assert {(d.attributes or {}).get("kadence.task_kind") for d in dispatches} >= {"workflow", "activity"}
        assert all((d.attributes or {})["messaging.consumer.group.name"] == "kadence-matching" for d in dispatches)
        dispatch_ids = {d.context.span_id for d in dispatches}

        workflow_tasks = _one(trace, "RunWorkflowTask TracedWorkflow", SpanKind.CONSUMER)
        activities = _one(trace, "RunActivity traced_greeting", SpanKind.CONSUMER)
        for s in [*workflow_tasks, *activities]:
            assert s.parent is not None and s.parent.span_id in dispatch_ids
            assert (s.attributes or {})["kadence.run_id"] == handle.run_id
        # The task after the activity ran ahead on its worker, inside the activity's span.
        ahead = _one(trace, "RunWorkflowTask TracedWorkflow", SpanKind.INTERNAL)
        assert len(workflow_tasks) + len(ahead) >= 2  # before and after the activity
        for s in ahead:
            assert s.parent is not None and s.parent.span_id in {a.context.span_id for a in activities}
            assert (s.attributes or {})["kadence.ran_ahead"] is True

        # The worker's answers continue the trace: each respond call is a server span in it.
        routes = {(s.attributes or {}).get("http.route") for s in trace if s.kind == SpanKind.SERVER}
        assert "/api/v1/namespaces/{namespace}/workflow-tasks/complete" in routes
        assert "/api/v1/namespaces/{namespace}/activity-tasks/complete" in routes
        # ... and the run's last transition (WorkflowExecutionCompleted) is in it too.
        assert sum(1 for s in history if (s.attributes or {}).get("kadence.workflow_id") == wid) == len(history)
        return True

    await eventually(whole_trace, what="the whole trace finished")


async def test_tracing_off_builds_no_spans(client: Client, spans: InMemorySpanExporter) -> None:
    telemetry.configure(tracer_provider=None)
    wid = f"untraced-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-untraced", workflows=[TracedWorkflow], activities=[traced_greeting]):
        assert await client.execute_workflow(TracedWorkflow.run, "x", id=wid, task_queue="q-untraced") == "Hello, x!"
    assert not [s for s in spans.get_finished_spans()
                if (s.attributes or {}).get("kadence.workflow_id") == wid]
