"""The co-location ports (services/common/colocation.py): what each implementation hands
over, and that tracing wraps the co-located ports instead of turning them off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kadence_protocol.tracing import kafka_headers, tracer
from services.common import colocation
from services.common.config import Settings
from services.common.validation import Limits
from services.history.builder import LocalTask
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(10)


class Matching:
    def __init__(self) -> None:
        self.handed: list[Any] = []

    def takes(self, namespace: str, task_queue: str) -> bool:
        return task_queue == "here"

    def hand_over(self, tasks: Any) -> None:
        self.handed.extend(tasks)


class Frontend:
    instance_id = "frontend-1"

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.closed: list[Any] = []

    def take_replies(self, replies: list[dict[str, Any]]) -> None:
        self.replies.extend(replies)

    def take_closed(self, runs: list[Any]) -> None:
        self.closed.extend(runs)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with in_memory_spans() as exporter:
        yield exporter


def _task(headers: tuple[tuple[str, bytes], ...] = ()) -> LocalTask:
    record = {"namespace": "ns", "task_queue": "here", "workflow_id": "wf", "run_id": "r", "task_id": "r:wt:2",
              "workflow_type": "T"}
    return LocalTask("WorkflowTask", record, None, headers)


def test_the_broker_side_of_each_port_takes_nothing() -> None:
    assert not colocation.KafkaCommands().colocated and colocation.KafkaCommands().headers() == ()
    assert not colocation.OutboxTasks().takes("ns", "here")
    assert not colocation.OutboxReplies().takes("frontend-1")


async def test_the_colocated_ports_hand_over_to_the_services_here() -> None:
    taken: list[Any] = []
    bus = colocation.ColocatedCommands(lambda *args: taken.append(args))
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    bus.queued(1, b"k", b"v", (), acked)
    checked = Limits(max_payload_bytes=1000)
    bus.queued(1, b"k", b"w", (), acked, checked)  # the limits the frontend checked it under go with it
    assert bus.colocated and taken == [(1, b"k", b"v", (), acked, None), (1, b"k", b"w", (), acked, checked)]

    matching = Matching()
    tasks = colocation.LocalMatching(matching)
    assert tasks.takes("ns", "here") and not tasks.takes("ns", "elsewhere")
    tasks.hand_over([_task()])
    assert len(matching.handed) == 1

    frontend = Frontend()
    replies = colocation.LocalFrontend(frontend)
    assert replies.takes("frontend-1") and not replies.takes("frontend-2")
    replies.replies([{"request_id": "x"}])
    replies.closed([("run", {"status": "Completed"})])
    assert frontend.replies == [{"request_id": "x"}] and frontend.closed == [("run", {"status": "Completed"})]


def test_untraced_the_traced_ports_change_nothing() -> None:
    matching = Matching()
    sink = colocation.traced_tasks(colocation.LocalMatching(matching))
    task = _task()
    sink.hand_over([task])
    assert matching.handed == [task]  # the very object: no span, no copy
    assert colocation.traced_commands(colocation.KafkaCommands()).headers() == ()
    assert isinstance(colocation.traced_tasks(colocation.OutboxTasks()), colocation.OutboxTasks)


def test_traced_a_handed_over_task_gets_its_dispatch_span_in_the_commands_trace(
        spans: InMemorySpanExporter) -> None:
    t = tracer()
    assert t is not None
    with t.start_as_current_span("history") as history:
        headers = tuple(kafka_headers())
    matching = Matching()
    colocation.traced_tasks(colocation.LocalMatching(matching)).hand_over([_task(headers)])
    (handed,) = matching.handed
    (dispatch,) = [s for s in spans.get_finished_spans() if s.name == "process kadence.tasks"]
    assert dispatch.kind == SpanKind.CONSUMER and dispatch.parent is not None
    assert dispatch.parent.span_id == history.get_span_context().span_id
    attributes = dispatch.attributes or {}
    assert attributes["kadence.handed_over"] is True and attributes["kadence.task_kind"] == "workflow"
    assert handed.traceparent is not None and f"{dispatch.context.span_id:016x}" in handed.traceparent
    assert handed.record is _task().record or handed.record == _task().record


def test_traced_a_command_carries_the_callers_context(spans: InMemorySpanExporter) -> None:
    bus = colocation.traced_commands(colocation.ColocatedCommands(lambda *args: None))
    assert bus.colocated  # tracing does not turn co-location off
    t = tracer()
    assert t is not None
    with t.start_as_current_span("call") as call:
        headers = dict(bus.headers())
    assert f"{call.get_span_context().span_id:016x}".encode() in headers["traceparent"]


def test_colocation_is_on_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KADENCE_COLOCATE", raising=False)
    assert Settings.from_env().colocate
    for off in ("0", "false", "no"):
        monkeypatch.setenv("KADENCE_COLOCATE", off)
        assert not Settings.from_env().colocate
    monkeypatch.setenv("KADENCE_COLOCATE", "1")
    assert Settings.from_env().colocate
