"""Interceptors (kadence/interceptor.py): client calls (headers, refusal), workflow inbound and
outbound, activity inbound, in the in-memory environment and against a stand-in frontend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp.web
import pytest

from kadence import ApplicationError, Client, activity, workflow
from kadence.exceptions import ActivityError
from kadence.interceptor import (
    ActivityInboundInterceptor,
    ClientOutboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    HandleQueryInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    ScheduleActivityInput,
    ScheduleLocalActivityInput,
    SignalWorkflowInput,
    SleepInput,
    StartWorkflowInput,
    TerminateWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowOutboundInterceptor,
)
from kadence.testing import WorkflowEnvironment

pytestmark = pytest.mark.timeout(30)

LOG: list[str] = []


class _Outbound(WorkflowOutboundInterceptor):
    async def execute_activity(self, input: ScheduleActivityInput) -> Any:
        if not workflow.is_replaying():
            LOG.append(f"schedule {input.activity_type}")
        if input.activity_type == "forbidden":
            raise ApplicationError("activity forbidden here", type="Refused", non_retryable=True)
        return await super().execute_activity(input)

    async def execute_local_activity(self, input: ScheduleLocalActivityInput) -> Any:
        LOG.append(f"local {input.activity_type}")
        return await super().execute_local_activity(input)

    async def sleep(self, input: SleepInput) -> None:
        LOG.append(f"sleep {input.seconds:g}")
        await super().sleep(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        LOG.append(f"run {input.workflow_type}{list(input.args)}")
        result = await super().execute_workflow(input)
        LOG.append(f"returned {result!r}")
        return result

    def handle_signal(self, input: HandleSignalInput) -> Any:
        LOG.append(f"signal {input.signal}{list(input.args)}")
        return super().handle_signal(input)

    def handle_query(self, input: HandleQueryInput) -> Any:
        LOG.append(f"query {input.query}")
        return super().handle_query(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        LOG.append(f"validate {input.update}")
        super().handle_update_validator(input)

    def handle_update(self, input: HandleUpdateInput) -> Any:
        LOG.append(f"update {input.update}")
        return super().handle_update(input)


class _Activity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        LOG.append(f"attempt {activity.info().activity_type} local={input.is_local}")
        return await super().execute_activity(input)


class Logging(Interceptor):
    def workflow_interceptor_class(self) -> type[WorkflowInboundInterceptor]:
        return _Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Activity(next)


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@activity.defn(name="forbidden")
async def forbidden() -> str:
    return "ran anyway"


@workflow.defn
class Greeter:
    def __init__(self) -> None:
        self.names: list[str] = []

    @workflow.run
    async def run(self, first: str) -> str:
        await workflow.sleep(60)
        await workflow.wait_condition(lambda: len(self.names) >= 2)
        local = await workflow.execute_local_activity(greet, first, start_to_close_timeout=timedelta(seconds=5))
        remote = await workflow.execute_activity(greet, self.names[0], start_to_close_timeout=timedelta(seconds=5))
        try:
            await workflow.execute_activity(forbidden, start_to_close_timeout=timedelta(seconds=5))
        except ApplicationError as err:
            refused = err.type
        return f"{local}/{remote}/{refused}"

    @workflow.signal
    def add(self, name: str) -> None:
        self.names.append(name)

    @workflow.query
    def count(self) -> int:
        return len(self.names)

    @workflow.update
    def rename(self, name: str) -> int:
        self.names.append(name)
        return len(self.names)

    @rename.validator
    def check_rename(self, name: str) -> None:
        if not name:
            raise ApplicationError("a name is needed")


async def test_workflow_and_activity_interceptors_see_every_call_and_may_refuse_one() -> None:
    LOG.clear()
    async with WorkflowEnvironment(workflows=[Greeter], activities=[greet, forbidden],
                                   interceptors=[Logging()]) as env:
        handle = await env.start_workflow(Greeter.run, "ana", id="g-1")
        assert await handle.execute_update(Greeter.rename, "bo") == 1
        assert await handle.query(Greeter.count) == 1
        await handle.signal(Greeter.add, "cy")
        assert await handle.result() == "hello ana/hello bo/Refused"
    # Interceptors run inside the workflow, replays included (only "schedule" is kept to live runs).
    live = [line for line in LOG if not line.startswith(("run ", "returned", "sleep", "query", "validate", "update", "signal"))]
    assert live == ["local greet", "attempt greet local=True", "schedule greet", "attempt greet local=False",
                    "schedule forbidden"]
    assert "run Greeter['ana']" in LOG and "sleep 60" in LOG and "query count" in LOG
    assert LOG.index("validate rename") < LOG.index("update rename") < LOG.index("signal add['cy']")
    assert LOG[-1] == "returned 'hello ana/hello bo/Refused'"
    assert "attempt forbidden" not in " ".join(LOG)  # refused before it was scheduled


# -- the client, against a stand-in frontend that records what it was sent ----------------------


@pytest.fixture
async def frontend() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append((request.path.rsplit("/", 1)[-1], dict(request.headers)))
        return aiohttp.web.json_response({"run_id": "r-1", "result": None})

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


class _Tenant(ClientOutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        LOG.append(f"start {input.workflow_type} {input.id} {input.start_signal}")
        input.headers["X-Tenant"] = "acme"
        return await super().start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        LOG.append(f"signal {input.signal}")
        input.headers["X-Tenant"] = "acme"
        await super().signal_workflow(input)

    async def terminate_workflow(self, input: TerminateWorkflowInput) -> None:
        raise PermissionError(f"terminating {input.handle.workflow_id} is not allowed here")


class Tenant(Interceptor):
    def intercept_client(self, next: ClientOutboundInterceptor) -> ClientOutboundInterceptor:
        return _Tenant(next)


async def test_client_interceptors_add_headers_and_refuse_calls(
        frontend: tuple[str, list[tuple[str, dict[str, str]]]]) -> None:
    LOG.clear()
    url, seen = frontend
    client = await Client.connect(url, api_key="", interceptors=[Tenant()])
    try:
        handle = await client.start_workflow(Greeter.run, "ana", id="g-2", task_queue="q")
        await handle.signal(Greeter.add, "bo")
        await handle.query(Greeter.count)
        with pytest.raises(PermissionError, match="not allowed"):
            await handle.terminate("no")
        await client.signal_with_start_workflow(Greeter.run, "cy", id="g-3", task_queue="q", signal=Greeter.add,
                                                signal_args=["dee"])
    finally:
        await client.close()
    assert LOG == ["start Greeter g-2 None", "signal add", "start Greeter g-3 add"]
    assert [(path, headers.get("X-Tenant")) for path, headers in seen] == [
        ("workflows", "acme"), ("signal", "acme"), ("query", None),  # nothing sent for the terminate
        ("signal-with-start", "acme")]


async def test_an_activity_error_raised_by_an_outbound_interceptor_is_the_workflows_to_handle() -> None:
    @workflow.defn(name="Refused")
    class Refused:
        @workflow.run
        async def run(self) -> str:
            try:
                return await workflow.execute_activity(forbidden, start_to_close_timeout=timedelta(seconds=5))
            except ActivityError:
                return "activity error"
            except ApplicationError as err:
                return f"refused: {err.message}"

    async with WorkflowEnvironment(workflows=[Refused], activities=[forbidden], interceptors=[Logging()]) as env:
        assert await env.execute_workflow(Refused.run, id="r-1") == "refused: activity forbidden here"


async def test_the_sdks_client_spans_come_from_its_tracing_interceptor(
        frontend: tuple[str, list[tuple[str, dict[str, str]]]]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from services.common import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(tracer_provider=provider)
    url, seen = frontend
    client = await Client.connect(url, api_key="", interceptors=[Tenant()])
    try:
        handle = await client.start_workflow(Greeter.run, "ana", id="g-4", task_queue="q")
        await handle.signal(Greeter.add, "bo")
    finally:
        await client.close()
        telemetry.reset()
        provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    start, signal = spans["StartWorkflow Greeter"], spans["SignalWorkflow add"]
    assert start.kind == SpanKind.INTERNAL and start.attributes == {"kadence.workflow_id": "g-4"}
    posts = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    # Each HTTP call's span is inside the call's span, and its traceparent went to the frontend.
    assert [p.parent.span_id for p in posts if p.parent] == [start.context.span_id, signal.context.span_id]
    assert all(headers.get("traceparent") for _, headers in seen)
    assert seen[0][1]["X-Tenant"] == "acme"  # the user's interceptor ran inside the SDK's
