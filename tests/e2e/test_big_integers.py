"""An integer past 64 bits is JSON: a start, a signal and a memo carry it through the client,
the frontend, history and visibility unchanged (orjson, used on every hop for speed, would
refuse to write it or read it back as a float)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)
BIG = 10**30 + 7


@workflow.defn(name="BigEcho")
class BigEcho:
    def __init__(self) -> None:
        self.got: list[int] = []

    @workflow.run
    async def run(self, n: int) -> list[int]:
        await workflow.wait_condition(lambda: bool(self.got))
        return [n, *self.got]

    @workflow.signal
    def add(self, n: int) -> None:
        self.got.append(n)


async def test_an_integer_past_64_bits_is_carried_unchanged(cluster: Cluster) -> None:
    wid = f"big-{uuid.uuid4().hex[:8]}"
    client = await Client.connect(cluster.url)
    try:
        async with Worker(client, task_queue="big", workflows=[BigEcho]):
            handle = await client.start_workflow(BigEcho.run, BIG, id=wid, task_queue="big", memo={"n": -BIG})
            await handle.signal(BigEcho.add, BIG + 1)
            assert await handle.result(timeout=30) == [BIG, BIG + 1]
            assert (await handle.describe())["memo"] == {"n": -BIG}

            async def listed() -> dict[str, Any]:
                runs = [r async for r in client.list_workflows(f"WorkflowId = '{wid}' AND CloseTime IS NOT NULL")]
                assert runs and runs[0].memo is not None
                return dict(runs[0].memo)

            memo: dict[str, Any] = await eventually(listed, timeout=30)
            assert memo == {"n": -BIG}
    finally:
        await client.close()
