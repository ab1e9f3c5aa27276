"""Hostile callers against the per-namespace limits (services/frontend/quotas.py) on a whole
cluster: a limit set to an extreme value must still answer 429 with a usable Retry-After, and
a call that does the work of many (a batch of result waits, a schedule's trigger) must not
slip past the rate that the same work one call at a time is held to."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from kadence import Client, ResourceExhaustedError, Worker, activity, workflow
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.namespaces import MISS_READ_INTERVAL_S
from tests.helpers import eventually

from .test_namespace_limits import _id, _requests_end, limited
from .workflows import EchoWorkflow

__all__ = ["limited"]  # the fixture (metrics_url is conftest.py's)

pytestmark = pytest.mark.timeout(90)


async def _patch_limits(http: aiohttp.ClientSession, url: str, ns: str, limits: dict[str, float]) -> None:
    async with http.patch(f"{url}/api/v1/namespaces/{ns}", json={"limits": limits}) as resp:
        assert resp.status == 200, await resp.text()


async def test_extreme_rates_are_refused_and_the_smallest_gives_a_usable_retry_after(limited: Cluster) -> None:
    # Held: the schema bounds a rate to [0.001, 1e9]; 5e-324 (positive, an infinite wait) and
    # 1e308 are 400. At the floor, a refusal names a finite wait.
    describe = f"{limited.url}/api/v1/namespaces/flood/workflows/nobody"
    async with aiohttp.ClientSession() as http:
        for bad in (5e-324, 1e308, -1, 0):
            async with http.patch(f"{limited.url}/api/v1/namespaces/flood", json={"limits": {"rps": bad}}) as resp:
                assert (resp.status, (await resp.json())["field"]) == (400, "limits.rps"), bad
        await _patch_limits(http, limited.url, "flood", {"rps": 0.001})
        statuses = []
        for _ in range(3):
            async with http.get(describe) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    assert statuses[0][0] == 404  # the bucket's one token
    for status, retry_after, body in statuses[1:]:
        assert (status, body["error"]) == (429, "ResourceExhausted"), body
        assert retry_after is not None and 1 <= int(retry_after) <= 1000
        assert 0 < body["retry_after_ms"] <= 1_000_000


async def test_a_batch_of_result_waits_costs_what_its_waits_would_one_by_one(limited: Cluster) -> None:
    base = f"{limited.url}/api/v1/namespaces/flood"
    async with aiohttp.ClientSession() as http:
        await _patch_limits(http, limited.url, "flood", {"rps": 5})  # a burst of 10
        waits = [{"workflow_id": _id("nobody"), "wait": "0s"} for _ in range(200)]
        async with http.post(f"{base}/workflow-results", json={"waits": waits}) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
        # 200 reads were served for the namespace: its bucket is 190 in debt, and a lone
        # describe is refused, as after 200 result calls one by one.
        async with http.get(f"{base}/workflows/nobody") as resp:
            body = await resp.json()
    assert (resp.status, body.get("limit")) == (429, "rps"), body


async def test_triggering_a_schedule_counts_against_the_namespace_rate(limited: Cluster) -> None:
    base = f"{limited.url}/api/v1/namespaces/flood"
    sid = _id("sched")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/schedules", json={
                "schedule_id": sid, "spec": {"interval": "1h"}, "paused": True,
                "action": {"workflow_type": "EchoWorkflow", "task_queue": "q-none", "input": ["x"]}}) as resp:
            assert resp.status == 201, await resp.text()
        await _patch_limits(http, limited.url, "flood", {"rps": 1})  # a burst of 2
        statuses = []
        started = time.monotonic()
        for _ in range(10):  # each trigger starts a run: a start by another route
            async with http.post(f"{base}/schedules/{sid}/trigger", json={}) as resp:
                statuses.append(resp.status)
                await resp.read()
        elapsed = time.monotonic() - started
    assert statuses[0] == 200 and set(statuses) <= {200, 429}, statuses
    # No more than the bucket holds and refills meanwhile (the bound holds however slow the machine).
    assert statuses.count(200) <= 2 + elapsed * 1 + 1, (statuses, elapsed)


async def test_calls_to_many_unregistered_namespaces_do_not_each_read_postgresql(limited: Cluster) -> None:
    # An unregistered namespace has no limits of its own (it is refused 404): a caller cycling
    # through made-up names must not make every call a read of the namespaces table.
    registry = limited.frontend.namespaces
    assert registry is not None
    before = registry.reads
    names = [f"made-up-{uuid.uuid4().hex[:10]}" for _ in range(200)]

    async def describe(http: aiohttp.ClientSession, ns: str) -> int:
        async with http.get(f"{limited.url}/api/v1/namespaces/{ns}/workflows/x") as resp:
            await resp.read()
            return resp.status

    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(describe(http, ns) for ns in names))
    elapsed = time.monotonic() - started
    assert set(statuses) == {404}
    reads = registry.reads - before
    assert reads <= 2 + elapsed / MISS_READ_INTERVAL_S, (reads, elapsed)
    # Case and encoding are not other namespaces: "FLOOD" is unregistered, "%66lood" is "flood".
    async with aiohttp.ClientSession() as http:
        assert await describe(http, "FLOOD") == 404
        assert await describe(http, "%66lood") == 404  # the workflow x: not found in "flood"
        async with http.get(f"{limited.url}/api/v1/namespaces/%66lood/workflows/x") as resp:
            assert (await resp.json())["error"] == "WorkflowNotFound"


@activity.defn
async def held_open(note: str) -> str:
    TOKENS[activity.info().workflow_id] = activity.info().task_token
    activity.raise_complete_async()


@workflow.defn
class HoldsAnActivity:
    @workflow.run
    async def run(self, note: str) -> str:
        return str(await workflow.execute_activity(held_open, note, start_to_close_timeout=timedelta(minutes=5)))


TOKENS: dict[str, str] = {}


@pytest.fixture
async def answers_limited(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, namespace_rps=1, namespace_answer_rps=20)
    async with Cluster(settings) as c:
        yield c


async def test_a_flood_of_worker_answers_is_held_to_a_rate_and_cannot_fill_the_shared_log(
        answers_limited: Cluster) -> None:
    # Worker answers are not held to the API's rate (a tenant's flood of starts must not keep
    # its workers from finishing), but one token of a running activity must not let a tenant
    # write to kadence.requests, which every namespace's commands share, without any bound.
    cluster = answers_limited
    wid = _id("heartbeats")
    async with await Client.connect(cluster.url) as client, \
            Worker(client, task_queue="q-held", workflows=[HoldsAnActivity], activities=[held_open]):
        await client.start_workflow(HoldsAnActivity.run, "x", id=wid, task_queue="q-held")
        token = await eventually(lambda: TOKENS.get(wid), timeout=20, what="the activity's token")
        before = await _requests_end(cluster.settings.kafka_bootstrap)
        statuses: Counter[int] = Counter()
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                async with http.post(f"{cluster.url}/api/v1/namespaces/default/activity-tasks/heartbeat",
                                     json={"task_token": token, "details": "[1]"}) as resp:
                    statuses[resp.status] += 1
                    body = await resp.json()
                    if resp.status == 429:
                        assert (body["limit"], body["limit_value"]) == ("answer_rps", 20), body
        elapsed = time.monotonic() - started
        produced = await _requests_end(cluster.settings.kafka_bootstrap) - before
        # At most the bucket (2 s of 20 a second) and its refill meanwhile; each heartbeat taken
        # is one record. Before, all 300 were taken.
        assert statuses[200] <= 40 + 20 * elapsed + 1 and set(statuses) <= {200, 429}, (statuses, elapsed)
        assert produced <= statuses[200], (produced, statuses)
        # Its answer still goes once the flood stops (a client's call raises the 429 for its
        # caller to wait out, as docs/sdk.md says; a worker's answers wait it out themselves).
        async def complete() -> bool:
            try:
                await client.get_async_activity_handle(task_token=token).complete("done")
            except ResourceExhaustedError as err:
                assert err.limit == "answer_rps"
                return False
            return True

        await eventually(complete, timeout=20, what="the activity completed after the flood")
        assert await client.get_workflow_handle(wid).result() == "done"


async def test_the_web_ui_is_not_a_way_around_the_namespace_limits(limited: Cluster) -> None:
    # The UI's pages and actions call the API's handlers in process, not through its routes.
    async with await Client.connect(limited.url, namespace="flood") as client:
        wid = _id("ui")
        await client.start_workflow(EchoWorkflow.run, "x", id=wid, task_queue="q-none")
    ui = f"{limited.url}/ui"
    async with aiohttp.ClientSession() as http:
        await _patch_limits(http, limited.url, "flood", {"rps": 1, "visibility_rps": 1})
        signals, lists = [], []
        started = time.monotonic()
        for _ in range(8):
            async with http.post(f"{ui}/api/namespaces/flood/workflows/{wid}/signal",
                                 json={"signal_name": "poke", "input": []},
                                 headers={"X-Kadence-UI": "1"}) as resp:
                signals.append((resp.status, await resp.text()))
        for _ in range(8):
            async with http.get(f"{ui}/namespaces/flood/workflows") as resp:
                lists.append(resp.status)
                await resp.read()
        # A task queue's description reads its backlog: by the API or by the UI, it counts.
        queues = []
        for url in [f"{limited.url}/api/v1/namespaces/flood/task-queues/q-none"] * 4 + [
                f"{ui}/namespaces/flood/task-queues", f"{ui}/namespaces/flood/task-queues/q-none"] * 2:
            async with http.get(url) as resp:
                queues.append(resp.status)
                await resp.read()
        elapsed = time.monotonic() - started
    assert all("rps" in text for status, text in signals if status == 429)
    # Signals and task queue reads share the rps bucket, list pages the visibility one: no
    # more passed than each holds (2) and refills meanwhile (1 a second). Before, all did.
    api = [s for s, _ in signals] + queues
    assert set(api) <= {200, 429} and api.count(200) <= 2 + elapsed + 1, (api, elapsed)
    assert set(lists) <= {200, 429} and lists.count(200) <= 2 + elapsed + 1, (lists, elapsed)
