"""One workflow, one trace: every span of a run (and of its child) shares the start's trace id,
whatever path its tasks took: a timer's firing (in history, or run ahead on the worker), an
activity run ahead, a signal, a child workflow, a task dispatched again after it was lost.

See test_tracing.py for the shape of the spans on the plain path.
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
from services.cluster import Cluster
from tests.helpers import eventually
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(90)


@activity.defn
async def traced_step(name: str) -> str:
    return f"step {name}"


@workflow.defn
class TracedChild:
    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(0.2)
        return f"child {name}"


@workflow.defn
class TracedPaths:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(0.3)
        step = await workflow.execute_activity(traced_step, name, start_to_close_timeout=timedelta(seconds=10))
        await workflow.wait_condition(lambda: self.go)
        child = await workflow.execute_child_workflow(TracedChild.run, name, id=f"{workflow.info().workflow_id}-c")
        return f"{step}, {child}"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    """Autouse, so it is set up before the cluster fixture starts the services."""
    with in_memory_spans() as exporter:
        yield exporter


def _start_trace(finished: list[ReadableSpan], wid: str) -> int:
    start = next((s for s in finished if s.kind == SpanKind.SERVER
                  and (s.attributes or {}).get("http.route") == "/api/v1/namespaces/{namespace}/workflows"
                  and any((h.attributes or {}).get("kadence.workflow_id") == wid for h in finished
                          if h.parent is not None and h.context.trace_id == s.context.trace_id)), None)
    assert start is not None, "no start span for the workflow"
    return int(start.context.trace_id)


def _run_spans(finished: list[ReadableSpan], wids: set[str]) -> list[ReadableSpan]:
    return [s for s in finished if (s.attributes or {}).get("kadence.workflow_id") in wids]


async def _one_trace(spans: InMemorySpanExporter, wid: str, *, timers_ahead: bool) -> None:
    wids = {wid, f"{wid}-c"}

    def one() -> bool:
        finished = list(spans.get_finished_spans())
        trace_id = _start_trace(finished, wid)
        ours = _run_spans(finished, wids)
        names = {s.name for s in ours}
        # The worker ran the tasks of both runs, the activity, and history took the timers.
        assert {"RunWorkflowTask TracedPaths", "RunWorkflowTask TracedChild",
                "RunActivity traced_step"} <= names, sorted(names)
        # A client's signal or result wait is a request of the client's own trace (its spans
        # and history's span for the command); what the run does after it is in the run's.
        callers = {s.context.trace_id for s in finished if s.name.startswith("SignalWorkflow ")
                   or str((s.attributes or {}).get("http.route", "")).endswith("/result")}
        assert not [s.name for s in finished if s.context.trace_id in callers
                    and s.name.startswith(("RunWorkflowTask", "RunActivity", "process kadence.tasks"))]
        stray = sorted({(s.name, s.kind.name) for s in ours if s.context.trace_id not in callers | {trace_id}})
        assert not stray, f"spans of the run in another trace: {stray}"
        # Every task after a timer's firing is in it too (it ran ahead, or came from history).
        tasks = [s for s in ours if s.name.startswith("RunWorkflowTask TracedPaths")]
        assert len(tasks) >= 4, [(s.name, s.kind.name) for s in tasks]
        if timers_ahead:
            assert any((s.attributes or {}).get("kadence.ran_ahead") for s in tasks)
        return True

    await eventually(one, what="every span of the run in the start's trace", timeout=30)


@pytest.mark.parametrize("run_ahead", [True, False], ids=["run-ahead", "no-run-ahead"])
async def test_one_trace_through_timers_activities_signals_and_children(
        client: Client, spans: InMemorySpanExporter, run_ahead: bool) -> None:
    wid = f"paths-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-paths", workflows=[TracedPaths, TracedChild],
                      activities=[traced_step], run_ahead=run_ahead):
        handle = await client.start_workflow(TracedPaths.run, "a", id=wid, task_queue="q-paths")

        def waiting() -> bool:
            return any(s.name == "RunActivity traced_step" and (s.attributes or {}).get("kadence.workflow_id") == wid
                       for s in spans.get_finished_spans())
        await eventually(waiting, what="the activity ran")
        await handle.signal(TracedPaths.proceed)
        assert await handle.result() == "step a, child a"
    await _one_trace(spans, wid, timers_ahead=False)


async def test_tasks_dispatched_again_stay_in_the_trace(cluster: Cluster, client: Client,
                                                        spans: InMemorySpanExporter) -> None:
    """A task lost after history sent it (here: no worker took it before history's next owner
    loaded the run from PostgreSQL) goes out again from the state alone, in the run's trace."""
    wid = f"again-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(TracedPaths.run, "b", id=wid, task_queue="q-again")
    for shard in list(cluster.history.shards.values()):  # a shard may be taken meanwhile
        shard.cache.forget(list(shard.cache.runs.values()))  # as a new owner after kill -9: from the snapshot
        await shard.redispatcher.redispatch(force=True)
    async with Worker(client, task_queue="q-again", workflows=[TracedPaths, TracedChild], activities=[traced_step]):
        def waiting() -> bool:
            return any(s.name == "RunActivity traced_step" and (s.attributes or {}).get("kadence.workflow_id") == wid
                       for s in spans.get_finished_spans())
        await eventually(waiting, what="the activity ran")
        await handle.signal(TracedPaths.proceed)
        assert await handle.result() == "step b, child b"
    await _one_trace(spans, wid, timers_ahead=False)


@workflow.defn
class TracedCountdown:
    @workflow.run
    async def run(self, count: int) -> str:
        if count > 0:
            await workflow.sleep(0.1)
            workflow.continue_as_new(count - 1)
        return "done"


async def test_continue_as_new_stays_in_the_trace(client: Client, spans: InMemorySpanExporter) -> None:
    """A chain of runs is one trace (the same, not linked ones): README, "Traces and metrics"."""
    wid = f"chain-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-chain", workflows=[TracedCountdown]):
        assert await client.execute_workflow(TracedCountdown.run, 2, id=wid, task_queue="q-chain") == "done"

    def one() -> bool:
        finished = list(spans.get_finished_spans())
        trace_id = _start_trace(finished, wid)
        tasks = [s for s in finished if s.name.startswith("RunWorkflowTask TracedCountdown")
                 and (s.attributes or {}).get("kadence.workflow_id") == wid]
        runs = {(s.attributes or {}).get("kadence.run_id") for s in tasks}
        assert len(runs) == 3, runs  # the first run and its two continuations
        assert {s.context.trace_id for s in tasks} == {trace_id}
        return True

    await eventually(one, what="the chain's tasks in the start's trace", timeout=30)


async def test_a_new_worker_replaying_the_run_stays_in_the_trace(client: Client, spans: InMemorySpanExporter) -> None:
    """The worker that ran the first tasks stops; another one takes the run up (it replays it
    from history) on the signal, in the run's trace."""
    wid = f"replayed-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-replayed", workflows=[TracedPaths, TracedChild], activities=[traced_step]):
        handle = await client.start_workflow(TracedPaths.run, "c", id=wid, task_queue="q-replayed")

        def activity_ran() -> bool:
            return any(s.name == "RunActivity traced_step" and (s.attributes or {}).get("kadence.workflow_id") == wid
                       for s in spans.get_finished_spans())
        await eventually(activity_ran, what="the activity ran")
    async with Worker(client, task_queue="q-replayed", workflows=[TracedPaths, TracedChild], activities=[traced_step]):
        await handle.signal(TracedPaths.proceed)
        assert await handle.result() == "step c, child c"
    await _one_trace(spans, wid, timers_ahead=False)
