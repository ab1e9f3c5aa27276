"""Interceptors end to end against the real broker and PostgreSQL: a logging interceptor on
the client and the worker sees the client's calls, the workflow's inbound and outbound calls
and the activity attempts; a refusing one stops a cancel before it is sent and an activity
before it is scheduled."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from kadence import ApplicationError, Client, Worker, activity, workflow
from kadence.interceptor import (
    ActivityInboundInterceptor,
    CancelWorkflowInput,
    ClientOutboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    QueryWorkflowInput,
    ScheduleActivityInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowInboundInterceptor,
    WorkflowOutboundInterceptor,
)

pytestmark = pytest.mark.timeout(90)

LOG: list[str] = []


class _Client(ClientOutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        LOG.append(f"client start {input.workflow_type}")
        return await super().start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        LOG.append(f"client signal {input.signal}")
        await super().signal_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        LOG.append(f"client query {input.query}")
        return await super().query_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        LOG.append(f"client update {input.update}")
        return await super().start_workflow_update(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        raise PermissionError("cancelling is not allowed by policy")


class _Outbound(WorkflowOutboundInterceptor):
    async def execute_activity(self, input: ScheduleActivityInput) -> Any:
        if input.activity_type == "delete_everything":
            raise ApplicationError("refused by the interceptor", type="Refused", non_retryable=True)
        if not workflow.is_replaying():
            LOG.append(f"workflow schedules {input.activity_type}")
        return await super().execute_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if not workflow.is_replaying():
            LOG.append(f"workflow runs {input.workflow_type}")
        return await super().execute_workflow(input)

    def handle_signal(self, input: HandleSignalInput) -> Any:
        if not workflow.is_replaying():
            LOG.append(f"workflow signal {input.signal}")
        return super().handle_signal(input)

    def handle_update(self, input: HandleUpdateInput) -> Any:
        if not workflow.is_replaying():
            LOG.append(f"workflow update {input.update}")
        return super().handle_update(input)


class _Activity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        LOG.append(f"activity {activity.info().activity_type}")
        return await super().execute_activity(input)


class Logging(Interceptor):
    def intercept_client(self, next: ClientOutboundInterceptor) -> ClientOutboundInterceptor:
        return _Client(next)

    def workflow_interceptor_class(self) -> type[WorkflowInboundInterceptor]:
        return _Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Activity(next)


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@activity.defn
async def delete_everything() -> str:
    return "deleted"


@workflow.defn
class Intercepted:
    def __init__(self) -> None:
        self.words: list[str] = []

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: len(self.words) >= 2)
        refused = "not refused"  # a worker without the refusing interceptor (test_update_after_signal.py)
        try:
            await workflow.execute_activity(delete_everything, start_to_close_timeout=timedelta(seconds=10))
        except ApplicationError as err:
            refused = err.type
        loud = await workflow.execute_activity(shout, " ".join(self.words), start_to_close_timeout=timedelta(seconds=10))
        return f"{loud} ({refused})"

    @workflow.signal
    def word(self, text: str) -> None:
        self.words.append(text)

    @workflow.update
    def add(self, text: str) -> int:
        self.words.append(text)
        return len(self.words)

    @workflow.query
    def count(self) -> int:
        return len(self.words)


async def test_logging_and_refusing_interceptors_on_client_and_worker(cluster: Any) -> None:
    LOG.clear()
    client = await Client.connect(cluster.url, namespace="default", interceptors=[Logging()])
    try:
        async with Worker(client, task_queue="q-intercept", workflows=[Intercepted],
                          activities=[shout, delete_everything]):
            handle = await client.start_workflow(Intercepted.run, id=f"i-{uuid.uuid4().hex[:8]}",
                                                 task_queue="q-intercept")
            await handle.signal(Intercepted.word, "hello")
            assert await handle.execute_update(Intercepted.add, "world") == 2
            with pytest.raises(PermissionError):
                await handle.cancel()
            assert await handle.result(timeout=30) == "HELLO WORLD (Refused)"
            assert await handle.query(Intercepted.count) == 2
    finally:
        await client.close()
    assert [line for line in LOG if line.startswith("client")] == \
        ["client start Intercepted", "client signal word", "client update add", "client query count"]
    for line in ("workflow runs Intercepted", "workflow signal word", "workflow update add",
                 "workflow schedules shout", "activity shout"):
        assert line in LOG, (line, LOG)
    assert "activity delete_everything" not in LOG
    assert "workflow schedules delete_everything" not in LOG
    assert LOG.count("workflow schedules shout") == 1  # not again when a task replays
