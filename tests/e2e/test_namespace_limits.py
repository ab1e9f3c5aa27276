"""Per-namespace limits of the frontend (services/frontend/quotas.py) on a whole cluster: real
broker and PostgreSQL. A namespace over its request rate is refused 429 with nothing produced
to Kafka, while another namespace and the namespace's own workers carry on; long polls and
visibility queries have limits of their own; refusals are counted in /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kadence import Client, ResourceExhaustedError, Worker
from kadence.common import Backoff
from kadence.exceptions import WorkflowNotFoundError
from kadence_protocol.topics import REQUESTS
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

from .test_metrics import _value
from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(90)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _requests_end(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(REQUESTS, p) for p in consumer.partitions_for_topic(REQUESTS) or ()]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


@pytest.fixture
async def limited(metrics_url: str, broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    """A cluster whose defaults are generous; the tests set tight limits on one namespace."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    async with Cluster(settings) as c:
        async with await Client.connect(c.url) as admin:
            for ns in ("flood", "quiet"):
                await admin.create_namespace(ns, retention="1d")
        yield c


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def test_a_namespace_over_its_rate_is_refused_before_kafka_and_another_is_not(
        limited: Cluster, metrics_url: str) -> None:
    async with await Client.connect(limited.url) as admin:
        described = await admin.update_namespace("flood", limits={"rps": 2})
    assert described["limits"] == {"rps": 2.0, "concurrent_polls": None, "visibility_rps": None,
                                   "answer_rps": None}
    starts = f"{limited.url}/api/v1/namespaces/flood/workflows"
    before = await _requests_end(limited.settings.kafka_bootstrap)
    async with aiohttp.ClientSession() as http:
        # The burst (2 s of the rate) goes on describes, which produce nothing.
        refused = None
        for _ in range(10):
            async with http.get(f"{starts}/nobody") as resp:
                if resp.status == 429:
                    refused = await resp.json()
                    break
                assert resp.status == 404
        assert refused is not None
        # The starts go together right after: one by one they took more than the half second
        # that gives a token back on a loaded machine, and one of them was started.
        ids = [_id("refused") for _ in range(20)]
        *answers, batch = await asyncio.gather(
            *(_post(http, starts, {"workflow_id": wid, "workflow_type": "EchoWorkflow", "task_queue": "q-none",
                                   "input": ["x"]}) for wid in ids),
            # A batch of starts too: refused as a whole.
            _post(http, f"{limited.url}/api/v1/namespaces/flood/workflow-starts", {"starts": [
                {"workflow_id": wid, "workflow_type": "EchoWorkflow", "task_queue": "q-none"} for wid in ids]}))
        assert (batch[0], batch[1]["limit"]) == (429, "rps")
    assert {status for status, _, _ in answers} == {429}
    _status, body, retry_after = answers[0]
    assert (body["error"], body["namespace"], body["limit"], body["limit_value"]) == (
        "ResourceExhausted", "flood", "rps", 2)
    assert "'flood'" in body["message"] and "2 requests a second" in body["message"]
    assert int(retry_after) >= 1 and 0 < body["retry_after_ms"] <= 1000
    # Nothing of a refused call reached the broker, and no run was started.
    assert await _requests_end(limited.settings.kafka_bootstrap) == before
    async with await Client.connect(limited.url, namespace="quiet") as quiet:
        # Another namespace is not limited by the flood's bucket.
        for _ in range(10):
            await quiet.start_workflow(EchoWorkflow.run, "q", id=_id("quiet"), task_queue="q-none")
    # One try per call: the SDK's default retries a 429 after its Retry-After (decision 0019),
    # which would hide the refusal this looks at.
    async with await Client.connect(limited.url, namespace="flood", retry=Backoff(attempts=1)) as flood:
        # The bucket refills while the quiet starts run (2 a second; a loaded machine takes more
        # than half a second over them): the SDK's call is refused once it is drained again.
        caught = None
        for _ in range(10):
            try:
                await flood.get_workflow_handle(ids[0]).describe()
            except ResourceExhaustedError as exc:
                caught = exc
                break
            except WorkflowNotFoundError:
                continue  # a token was left: the call went through (no such run)
        assert caught is not None, "the SDK's calls to the flooded namespace were never refused"
        assert (caught.namespace, caught.limit) == ("flood", "rps")

    async def scrape() -> float:
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
            text = await resp.text()
        return _value(text, "kadence_frontend_requests_refused_total", kadence_namespace="flood",
                      kadence_limit="rps")

    assert await eventually(scrape, what="refusals counted") >= 22


async def test_workers_finish_the_runs_of_a_namespace_flooding_its_own_api(limited: Cluster) -> None:
    async with await Client.connect(limited.url, namespace="flood") as client:
        handle = await client.start_workflow(EchoWorkflow.run, "done", id=_id("w"), task_queue="q-own")
        await client.update_namespace(limits={"rps": 1})
        stop = asyncio.Event()
        refused = 0

        async def flood() -> None:  # the tenant's own clients, far over its limit, all the while
            nonlocal refused
            while not stop.is_set():
                try:
                    await flooder.get_workflow_handle("nobody").describe()
                except ResourceExhaustedError:
                    refused += 1
                except Exception:  # noqa: BLE001 -- a 404 when a token was left: keep flooding
                    pass
                await asyncio.sleep(0.005)

        # The flood's own client tries each call once (the default would wait out each 429).
        flooder = await Client.connect(limited.url, namespace="flood", retry=Backoff(attempts=1))
        flooding = asyncio.ensure_future(flood())
        try:
            async with Worker(client, task_queue="q-own", workflows=[EchoWorkflow], activities=[echo]):
                # Polls, task answers and heartbeats are not counted against the rate.
                async def closed() -> bool:
                    assert limited.pool is not None
                    rows = await limited.pool.fetch(
                        "SELECT status FROM executions WHERE namespace = 'flood' AND workflow_id = $1",
                        handle.id)
                    return bool(rows) and rows[0]["status"] != "Running"

                await eventually(closed, timeout=30, what="the run closed during the flood")
        finally:
            stop.set()
            await flooding
            await flooder.close()
        assert refused > 0
        await client.update_namespace(limits={"rps": None})  # back to the default: results read again
        assert await handle.result() == "done"


async def test_long_polls_over_the_namespace_cap_are_answered_429_at_once(limited: Cluster) -> None:
    async with await Client.connect(limited.url) as admin:
        await admin.update_namespace("flood", limits={"concurrent_polls": 2})
    poll = f"{limited.url}/api/v1/namespaces/flood/task-queues/q-polls/workflow-tasks/poll"
    body = {"identity": "test", "max_tasks": 1, "wait_seconds": 20}
    async with aiohttp.ClientSession() as http:
        held = [asyncio.ensure_future(_post(http, poll, body)) for _ in range(2)]
        try:
            await eventually(lambda: limited.frontend.quotas is not None
                             and limited.frontend.quotas.open_polls("flood") == 2, timeout=10)
            loop = asyncio.get_running_loop()
            began = loop.time()
            status, answer, retry_after = await _post(http, poll, body)
            assert loop.time() - began < 5  # answered at once, not held for its wait_seconds
            assert (status, answer["error"], answer["limit"], answer["limit_value"], retry_after) == (
                429, "ResourceExhausted", "concurrent_polls", 2, "1")
            # Another namespace's polls are not capped by this one's.
            other = poll.replace("/flood/", "/quiet/")
            quick = {**body, "wait_seconds": 0}
            assert (await _post(http, other, quick))[0] == 200
        finally:
            for h in held:
                h.cancel()
            for h in held:
                with contextlib.suppress(asyncio.CancelledError):
                    await h
    assert limited.frontend.quotas is not None
    await eventually(lambda: limited.frontend.quotas is not None and limited.frontend.quotas.open_polls("flood") == 0,
                     timeout=10, what="the cancelled polls freed their slots")


async def test_visibility_queries_have_a_rate_of_their_own(limited: Cluster) -> None:
    async with await Client.connect(limited.url, namespace="flood") as client:
        await client.update_namespace(limits={"visibility_rps": 1})
        with pytest.raises(ResourceExhaustedError) as caught:
            for _ in range(5):
                await client.count_workflows()
        assert (caught.value.limit, caught.value.limit_value) == ("visibility_rps", 1)
        # The user API's bucket is apart: a start still goes.
        await client.start_workflow(EchoWorkflow.run, "v", id=_id("v"), task_queue="q-none")


async def test_a_namespace_has_its_own_worker_answer_rate(limited: Cluster) -> None:
    # Refused before the handler reads the token, so a made-up token shows the limit at work.
    async with await Client.connect(limited.url) as admin:
        described = await admin.update_namespace("flood", limits={"answer_rps": 2})
    assert described["limits"]["answer_rps"] == 2.0
    statuses: dict[str, list[int]] = {"flood": [], "quiet": []}
    async with aiohttp.ClientSession() as http:
        for ns, seen in statuses.items():
            for _ in range(20):
                status, body, retry_after = await _post(
                    http, f"{limited.url}/api/v1/namespaces/{ns}/activity-tasks/heartbeat",
                    {"task_token": "not-a-token", "details": "[]"})
                seen.append(status)
                if status == 429:
                    assert (body["limit"], body["limit_value"], body["namespace"]) == ("answer_rps", 2, ns), body
                    assert int(retry_after) >= 1
    # The bucket holds 2 s of 2 a second, refilled 2 a second: most of 20 quick calls are refused.
    assert statuses["flood"].count(429) >= 10 and 429 not in statuses["flood"][:4], statuses
    assert 429 not in statuses["quiet"], statuses  # the cluster's default (20,000) for the others
    async with await Client.connect(limited.url) as admin:
        assert (await admin.update_namespace("flood", limits={"answer_rps": None}))["limits"]["answer_rps"] is None
