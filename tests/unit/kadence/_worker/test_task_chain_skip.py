"""A worker skips the task chain while the SDK's tracing is its only interceptor and is off
(the chain would only pass the task on); a task interceptor of the user's, or tracing turned
on later, puts the chain back on every task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kadence._tracing_interceptor import TracingInterceptor
from kadence._worker.interception import intercepted_process, traced_only
from kadence.interceptor import Interceptor, WorkerTaskInput, WorkerTaskInterceptor
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(30)

TASK = {"task_token": "t", "workflow_id": "wf", "run_id": "r", "workflow_type": "W", "attempt": 1}


class _Counting(Interceptor):
    def __init__(self) -> None:
        self.seen: list[Mapping[str, Any]] = []

    def intercept_task(self, next: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
        seen = self.seen

        class Link(WorkerTaskInterceptor):
            async def run_task(self, input: WorkerTaskInput) -> None:
                seen.append(input.task)
                await self.next.run_task(input)

        return Link(next)


class _ClientOnly(Interceptor):
    """Intercepts nothing of a task."""


def test_only_interceptors_without_a_task_link_besides_tracing_are_skippable() -> None:
    assert traced_only([TracingInterceptor()])
    assert traced_only([TracingInterceptor(), _ClientOnly()])
    assert not traced_only([TracingInterceptor(), _Counting()])


async def test_tasks_run_the_same_with_tracing_off_and_on() -> None:
    processed: list[Mapping[str, Any]] = []

    async def process(task: Mapping[str, Any]) -> None:
        processed.append(task)

    run = intercepted_process([TracingInterceptor()], process, activity=False, namespace="default", task_queue="q")
    await run(TASK)
    assert processed == [TASK]
    with in_memory_spans() as exporter:  # turned on after the worker built its chain
        await run(TASK)
        assert [s.name for s in exporter.get_finished_spans()] == ["RunWorkflowTask W"]
    assert processed == [TASK, TASK]


async def test_a_users_task_interceptor_sees_every_task_with_tracing_off() -> None:
    counting = _Counting()

    async def process(task: Mapping[str, Any]) -> None:
        pass

    run = intercepted_process([TracingInterceptor(), counting], process, activity=True, namespace="default",
                              task_queue="q")
    await run(TASK)
    await run(TASK)
    assert counting.seen == [TASK, TASK]
