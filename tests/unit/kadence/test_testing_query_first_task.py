"""``kadence.testing``: a query right after the start (or a signal) waits for the run's first
workflow task, as the server does, instead of failing with "the workflow has not started
yet"."""

from __future__ import annotations

import pytest

from kadence import QueryFailedError, workflow
from kadence.testing import WorkflowEnvironment


@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.value = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.value > 1)
        return self.value

    @workflow.signal
    def set(self, value: int) -> None:
        self.value = value

    @workflow.query
    def current(self) -> int:
        return self.value


@workflow.defn
class Broken:
    @workflow.run
    async def run(self) -> None:
        raise KeyError("a bug in the first task")

    @workflow.query
    def current(self) -> int:
        return 0


async def test_a_query_right_after_the_start_is_answered() -> None:
    async with WorkflowEnvironment(workflows=[Counter]) as env:
        handle = await env.start_workflow(Counter.run, id="c-1")
        assert await handle.query(Counter.current) == 0
        await handle.signal(Counter.set, 1)
        await handle.signal(Counter.set, 2)
        assert await handle.result() == 2


async def test_a_run_whose_first_task_fails_is_refused_at_once() -> None:
    async with WorkflowEnvironment(workflows=[Broken]) as env:
        handle = await env.start_workflow(Broken.run, id="b-1")
        with pytest.raises(QueryFailedError):
            await handle.query(Broken.current)
