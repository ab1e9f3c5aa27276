"""What makes retrying a task answer safe: history takes the answer to a task attempt once.
A worker whose every answer reaches the frontend twice (as when a retry follows an answer
that was taken but whose reply was lost) still runs each activity once into history."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from kadence import Client, Worker
from kadence._http import HttpTransport
from kadence._worker.answers import ANSWER_PATHS
from services.cluster import Cluster

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, EchoWorkflow

pytestmark = pytest.mark.timeout(90)


class Twice:
    """Sends every task answer twice, the second as a retry would."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.repeated = 0

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        answer = await self.inner.call(method, path, body=body, params=params, timeout=timeout)
        if method == "POST" and (path in ANSWER_PATHS or path == "/task-answers"):
            await self.inner.call(method, path, body=body, params=params, timeout=timeout)
            self.repeated += 1
        return answer

    async def close(self) -> None:
        await self.inner.close()


async def test_repeated_answers_are_taken_once(cluster: Cluster) -> None:
    transport = Twice(HttpTransport(cluster.url, "default"))
    client = Client(transport)
    try:
        async with Worker(client, task_queue="q-twice", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handle = await client.start_workflow(EchoWorkflow.run, "hi", id=f"twice-{uuid.uuid4().hex[:6]}",
                                                 task_queue="q-twice")
            result = await handle.result(timeout=30)
        events = await handle.history()
    finally:
        await client.close()
    assert transport.repeated >= 2
    kinds = [e["event_type"] for e in events]
    assert kinds.count("ActivityTaskScheduled") == kinds.count("ActivityTaskCompleted") == 1
    assert kinds.count("WorkflowExecutionCompleted") == 1
    assert result == "hi"
