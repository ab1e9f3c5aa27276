"""A workflow handle's ``id`` is its workflow id, on the client's handle as on a child's and
the testing kit's (a Temporal user writes ``handle.id``)."""

from __future__ import annotations

from typing import cast

from kadence import Client, WorkflowHandle, workflow
from kadence.testing import WorkflowEnvironment


@workflow.defn
class Quick:
    @workflow.run
    async def run(self) -> str:
        return "ok"


async def test_handle_id_is_the_workflow_id() -> None:
    handle = WorkflowHandle(cast(Client, None), "order-42")  # no call made: no client needed
    assert handle.id == handle.workflow_id == "order-42"
    async with WorkflowEnvironment(workflows=[Quick]) as env:
        started = await env.start_workflow(Quick.run, id="q-1")
        assert started.id == "q-1"
        assert await started.result() == "ok"
