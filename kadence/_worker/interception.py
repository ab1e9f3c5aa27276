"""The ends of a worker's interceptor chains (kadence/interceptor.py): running a task, and
running an activity's function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from kadence._tracing_interceptor import TracingInterceptor
from kadence.interceptor import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    TaskKind,
    WorkerTaskInput,
    WorkerTaskInterceptor,
    chain_task,
)
from kadence_protocol.tracing import tracer

__all__ = ["ActivityCalls", "intercepted_process", "task_headers", "traced_only"]


class _TaskCalls(WorkerTaskInterceptor):
    def __init__(self, process: Callable[[Mapping[str, Any]], Awaitable[None]]) -> None:
        self._process = process

    async def run_task(self, input: WorkerTaskInput) -> None:
        await self._process(input.task)


def traced_only(interceptors: Sequence[Interceptor]) -> bool:
    """Whether the SDK's tracing is the only interceptor of the task chain: then, while
    tracing is off, the chain does nothing but pass the task on, and a caller may skip it."""
    return all(isinstance(i, TracingInterceptor) or type(i).intercept_task is Interceptor.intercept_task
               for i in interceptors)


def intercepted_process(interceptors: Sequence[Interceptor], process: Callable[[Mapping[str, Any]], Awaitable[None]],
                        *, activity: bool, namespace: str, task_queue: str,
                        ) -> Callable[[Mapping[str, Any]], Awaitable[None]]:
    """``process`` (a task processor's) behind the interceptors' task chain."""
    if not interceptors:
        return process
    chain = chain_task(interceptors, _TaskCalls(process))
    skippable = traced_only(interceptors)

    # A plain function handing back the awaitable, not a coroutine awaiting it: a coroutine
    # here would be one more frame held through each task's whole life, answer round trip
    # included (the collector walks what lives that long again and again).
    def run(task: Mapping[str, Any]) -> Awaitable[None]:
        if skippable and tracer() is None:
            return process(task)  # what the chain would do: tracing passes a task on while off
        kind = TaskKind.ACTIVITY if activity else TaskKind.QUERY if task.get("query") else TaskKind.WORKFLOW
        return chain.run_task(WorkerTaskInput(kind, task, namespace, task_queue))

    return run


class ActivityCalls(ActivityInboundInterceptor):
    """The end of the activity chain: ``invoke`` runs the function."""

    def __init__(self, invoke: Callable[[ExecuteActivityInput], Awaitable[Any]]) -> None:
        self._invoke = invoke

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await self._invoke(input)


def task_headers(task: Mapping[str, Any]) -> dict[str, str]:
    """What an activity task carries besides its payloads (its trace context)."""
    traceparent = task.get("traceparent")
    return {"traceparent": str(traceparent)} if traceparent else {}
