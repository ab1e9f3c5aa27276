"""Calls sent together (POST /workflow-starts and /workflow-results, kadence/_together.py), end
to end: each item is answered as its own call (POST /workflows, GET .../result) would answer
it alone, as soon as its own answer is known, and a client with many starts or result waits
in flight sends them in a few calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from kadence import Client, Worker
from kadence._http import HttpTransport
from kadence.exceptions import WorkflowAlreadyStartedError
from services.cluster import Cluster

from .workflows import EchoWorkflow, TimerWorkflow, echo


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)

NS = "/api/v1/namespaces/default"


class CountingTransport(HttpTransport):
    """The real transport, counting the calls it makes by path."""

    def __init__(self, target: str) -> None:
        super().__init__(target, "default")
        self.calls: Counter[str] = Counter()

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls[path] += 1
        return await super().call(method, path, **kwargs)

    async def stream(self, method: str, path: str, *, body: Mapping[str, Any],
                     timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        self.calls[path] += 1
        async for item in super().stream(method, path, body=body, timeout=timeout):
            yield item


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_many_executes_go_in_few_calls_and_each_gets_its_own_answer(cluster: Cluster) -> None:
    transport = CountingTransport(cluster.url)
    client = Client(transport, namespace="default")
    taken = _id("taken")
    try:
        async with Worker(client, task_queue="q-batch", workflows=[EchoWorkflow, TimerWorkflow], activities=[echo]):
            await client.start_workflow(TimerWorkflow.run, 30.0, id=taken, task_queue="q-batch")
            transport.calls.clear()
            calls = [client.execute_workflow(EchoWorkflow.run, f"v{i}", id=_id("many"), task_queue="q-batch")
                     for i in range(300)]
            # One of them names a workflow id that is running: only that caller gets the refusal.
            calls.insert(150, client.execute_workflow(EchoWorkflow.run, "dup", id=taken, task_queue="q-batch"))
            results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await client.close()
    assert isinstance(results[150], WorkflowAlreadyStartedError)
    del results[150]
    assert results == [f"v{i}" for i in range(300)]
    # The first start went alone; the 300 made while it was in flight went together.
    assert transport.calls["/workflow-starts"] >= 1
    assert transport.calls["/workflows"] <= 2, transport.calls


async def test_a_quick_workflow_is_answered_before_a_slow_neighbour(cluster: Cluster) -> None:
    transport = CountingTransport(cluster.url)
    client = Client(transport, namespace="default")
    try:
        async with Worker(client, task_queue="q-mixed", workflows=[EchoWorkflow, TimerWorkflow], activities=[echo]):
            slow = [asyncio.ensure_future(client.execute_workflow(TimerWorkflow.run, 8.0, id=_id("slow"),
                                                                  task_queue="q-mixed")) for _ in range(2)]
            quick = asyncio.ensure_future(client.execute_workflow(EchoWorkflow.run, "quick", id=_id("quick"),
                                                                  task_queue="q-mixed"))
            assert await asyncio.wait_for(quick, 6.0) == "quick"
            assert not any(s.done() for s in slow)  # the quick one shared a call with a sleeping one
            assert transport.calls["/workflow-starts"] == 1
            await asyncio.gather(*slow)
    finally:
        await client.close()


async def test_the_batch_call_answers_each_item_as_it_would_alone(cluster: Cluster) -> None:
    good = {"workflow_id": _id("raw"), "workflow_type": "EchoWorkflow", "task_queue": "q-raw", "input": ["x"]}
    taken = {**good, "workflow_id": _id("taken")}
    starts: list[Any] = [good, {"workflow_type": "T"}, {**good, "input": "not an array"}, {**taken, "wait_seconds": 0},
                         {**good, "workflow_id": _id("raw2"), "request_id": "r-1"}]
    async with aiohttp.ClientSession() as http:
        async with http.post(cluster.url + f"{NS}/workflows", json=taken) as resp:
            assert resp.status == 201
        async with http.post(cluster.url + f"{NS}/workflow-starts", json={"starts": starts}) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            raw = await resp.read()
        # One JSON document, and every line after the first an item of its own.
        whole = json.loads(raw)
        lines = raw.split(b"\n")
        assert lines[0] == b'{"results":[' and lines[-2] == b"]}"
        items = [json.loads(line.lstrip(b",")) for line in lines[1:-2]]
        assert items == whole["results"]
        by_index = {r["index"]: r for r in items}
        assert sorted(by_index) == [0, 1, 2, 3, 4]
        assert by_index[0]["status"] == 201 and by_index[0]["answer"]["run_id"]
        assert (by_index[1]["status"], by_index[1]["field"]) == (400, "workflow_id")
        assert (by_index[2]["status"], by_index[2]["field"]) == (400, "input")
        # The same workflow id again with another request id: refused, naming the running run.
        assert (by_index[3]["status"], by_index[3]["error"]) == (409, "WorkflowAlreadyStarted")
        assert by_index[4]["status"] == 201
        # Sent again with its request id, an item starts nothing new: the first answer comes back.
        async with http.post(cluster.url + f"{NS}/workflow-starts", json={"starts": [starts[4]]}) as resp:
            again = (await resp.json())["results"][0]
        assert again["status"] == 201 and again["answer"]["run_id"] == by_index[4]["answer"]["run_id"]

        # What the document refuses for the whole call (no array, too many items, an item that
        # is not an object) is refused whole, before anything starts.
        for body, field in (({"starts": []}, "starts"), ({"starts": [good] * 1001}, "starts"), ({}, "starts"),
                            ({"starts": [good, "not an object"]}, "starts[1]")):
            async with http.post(cluster.url + f"{NS}/workflow-starts", json=body) as resp:
                refused = await resp.json()
            assert (resp.status, refused["field"]) == (400, field), refused
        async with http.post(cluster.url + "/api/v1/namespaces/nowhere/workflow-starts",
                             json={"starts": [good]}) as resp:
            assert (resp.status, (await resp.json())["error"]) == (404, "NamespaceNotFound")


async def test_a_caller_that_goes_away_leaves_the_others_their_answers(cluster: Cluster) -> None:
    async with await Client.connect(cluster.url) as client:
        async with Worker(client, task_queue="q-away", workflows=[EchoWorkflow, TimerWorkflow], activities=[echo]):
            calls = [asyncio.ensure_future(client.execute_workflow(EchoWorkflow.run, f"v{i}", id=_id("away"),
                                                                   task_queue="q-away")) for i in range(20)]
            gone = asyncio.ensure_future(client.execute_workflow(TimerWorkflow.run, 30.0, id=_id("gone"),
                                                                 task_queue="q-away"))
            await asyncio.sleep(0)  # let every start queue
            gone.cancel()
            assert await asyncio.gather(*calls) == [f"v{i}" for i in range(20)]
            with pytest.raises(asyncio.CancelledError):
                await gone


async def test_many_result_waits_go_in_few_calls(cluster: Cluster) -> None:
    transport = CountingTransport(cluster.url)
    client = Client(transport, namespace="default")
    try:
        async with Worker(client, task_queue="q-wait", workflows=[EchoWorkflow], activities=[echo]):
            handles = await asyncio.gather(*(
                client.start_workflow(EchoWorkflow.run, f"v{i}", id=_id("wait"), task_queue="q-wait")
                for i in range(100)))
            transport.calls.clear()
            assert await asyncio.gather(*(h.result() for h in handles)) == [f"v{i}" for i in range(100)]
    finally:
        await client.close()
    assert transport.calls["/workflow-results"] >= 1
    assert sum(n for path, n in transport.calls.items() if path.endswith("/result")) <= 2, transport.calls


async def test_the_result_batch_call_answers_each_wait_as_it_would_alone(cluster: Cluster) -> None:
    async with await Client.connect(cluster.url) as client:
        async with Worker(client, task_queue="q-rw", workflows=[EchoWorkflow, TimerWorkflow], activities=[echo]):
            done = _id("done")
            assert await client.execute_workflow(EchoWorkflow.run, "x", id=done, task_queue="q-rw") == "x"
            running = await client.start_workflow(TimerWorkflow.run, 30.0, id=_id("running"), task_queue="q-rw")
            waits: list[Any] = [{"workflow_id": done}, {"workflow_id": _id("nobody"), "wait_seconds": 0},
                                {"workflow_id": running.workflow_id, "run_id": running.run_id, "wait_seconds": 0.2},
                                {"run_id": "r"}]
            async with aiohttp.ClientSession() as http:
                async with http.post(cluster.url + f"{NS}/workflow-results", json={"waits": waits}) as resp:
                    assert resp.status == 200
                    results = {r["index"]: r for r in (await resp.json())["results"]}
            await running.terminate()
    assert (results[0]["status"], results[0]["answer"]["status"]) == (200, "Completed")
    assert json.loads(results[0]["answer"]["result"]) == "x"
    assert (results[1]["status"], results[1]["error"]) == (404, "WorkflowNotFound")
    assert (results[2]["status"], results[2]["answer"]["status"]) == (200, "Running")
    assert (results[3]["status"], results[3]["field"]) == (400, "workflow_id")
