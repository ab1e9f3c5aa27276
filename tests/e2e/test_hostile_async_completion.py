"""Async activity completion used by a hostile caller: forged, truncated, altered and
mistyped tokens, a token at another namespace's path and run ids of another workflow are
refused with a 4xx and change nothing; a caller without a grant on the activity's task
queue or namespace is refused by token and by ids (by ids with the answer a missing
activity gets); a complete and a fail sent at once end
the attempt once (the other is dropped, as docs/sdk.md says)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from kadence import ActivityNotFoundError, Client, RetryPolicy, Worker, WorkflowFailureError, activity, workflow
from kadence.exceptions import RPCError
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend.auth import api_key_entry
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each uses
    its own workflow ids and task queue, and none stops, breaks or patches a service."""
    return module_cluster
TOKENS: dict[str, list[str]] = {}


@activity.defn
async def outside(note: str) -> str:
    TOKENS.setdefault(activity.info().workflow_id, []).append(activity.info().task_token)
    activity.raise_complete_async()


@workflow.defn
class Waits:
    @workflow.run
    async def run(self, case: str) -> str:
        return str(await workflow.execute_activity(outside, case, start_to_close_timeout=timedelta(seconds=30),
                                                   retry_policy=RetryPolicy(maximum_attempts=1),
                                                   activity_id="the-activity"))


async def _token(wid: str) -> str:
    got: list[str] = await eventually(lambda: TOKENS.get(wid, []), timeout=20, what=f"a token of {wid}")
    return got[0]


async def test_forged_and_truncated_tokens_are_refused_with_4xx(client: Client, cluster: Cluster) -> None:
    queue = "q-hostile-async"
    wid = f"forge-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Waits], activities=[outside]):
        await client.start_workflow(Waits.run, "x", id=wid, task_queue=queue)
        token = await _token(wid)
        payload, mac = token.split(".")
        variants = [token[:-1], token[:-3], payload, payload + ".", "." + mac, token + "A", token + "==",
                    payload[:-2] + "." + mac, token.replace(".", ".."), token + "." + mac, "é" + token,
                    token[:10], "..", ".", " " * 3, token.upper(), payload + "." + mac[:-1] + "\x00",
                    token + "\n", 12345, None, [token], {"t": token}]
        async with aiohttp.ClientSession() as http:
            for bad in variants:
                for path in ("complete", "fail", "heartbeat", "cancel"):
                    body = {"task_token": bad, "current_attempt": True, "result": "\"forged\"",
                            "failure": {"message": "f", "type": "F"}}
                    async with http.post(f"{cluster.url}/api/v1/namespaces/default/activity-tasks/{path}",
                                         json=body) as resp:
                        assert 400 <= resp.status < 500, (bad, path, resp.status, await resp.text())
            # The same token at another namespace's path.
            async with http.post(f"{cluster.url}/api/v1/namespaces/other/activity-tasks/complete",
                                 json={"task_token": token, "current_attempt": True, "result": "1"}) as resp:
                assert resp.status in (403, 404), await resp.text()
            # By ids: a run id of another workflow, unknown ids, odd characters.
            other = f"other-{uuid.uuid4().hex[:8]}"
            await client.start_workflow(Waits.run, "y", id=other, task_queue=queue)
            await _token(other)
            other_run = (await client.get_workflow_handle(other).describe())["run_id"]
            for path, params in [(f"/workflows/{wid}/activities/the-activity/task-token", {"run_id": other_run}),
                                 (f"/workflows/{wid}/activities/nope/task-token", {}),
                                 (f"/workflows/{wid}/activities/the-activity/task-token", {"run_id": "x" * 300}),
                                 (f"/workflows/{wid}/activities/the-activity/task-token", {"run_id": ""}),
                                 ("/workflows/nope/activities/the-activity/task-token", {})]:
                async with http.get(f"{cluster.url}/api/v1/namespaces/default{path}", params=params) as resp:
                    text = await resp.text()
                    if params.get("run_id") == "":
                        assert resp.status in (200, 400), text
                    else:
                        assert 400 <= resp.status < 500, (path, params, resp.status, text)
        # Nothing took effect: the real token still completes, once.
        await client.get_async_activity_handle(task_token=token).complete("real")
        assert await client.get_workflow_handle(wid).result(timeout=20) == "real"


async def test_complete_and_fail_racing(client: Client) -> None:
    queue = "q-hostile-async-race"
    async with Worker(client, task_queue=queue, workflows=[Waits], activities=[outside]):
        for i in range(5):
            wid = f"race-{i}-{uuid.uuid4().hex[:8]}"
            await client.start_workflow(Waits.run, "x", id=wid, task_queue=queue)
            token = await _token(wid)
            h = client.get_async_activity_handle(task_token=token)
            outcomes = await asyncio.gather(h.complete("won"), h.fail(RuntimeError("lost")),
                                            return_exceptions=True)
            with contextlib.suppress(WorkflowFailureError):
                await client.get_workflow_handle(wid).result(timeout=20)
            events = [e["event_type"] for e in await client.get_workflow_handle(wid).history()]
            ended = [e for e in events if e in ("ActivityTaskCompleted", "ActivityTaskFailed")]
            # Both may be answered 200 (the check precedes history's verdict): one is dropped.
            assert all(o is None or isinstance(o, ActivityNotFoundError) for o in outcomes), outcomes
            assert len(ended) == 1, events


@pytest.fixture
async def secured(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"api_keys": [
        api_key_entry("shop-worker", "shop-worker-key",
                      [{"namespace": "shop", "permissions": ["worker", "read", "write"], "task_queues": ["orders"]}]),
        api_key_entry("cards-worker", "cards-worker-key",
                      [{"namespace": "shop", "permissions": ["worker"], "task_queues": ["cards"]}]),
        api_key_entry("bank-worker", "bank-worker-key",
                      [{"namespace": "bank", "permissions": ["worker", "read", "write"]}]),
        api_key_entry("ops", "ops-key", [{"namespace": "*", "permissions": ["admin"]}]),
    ]}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, auth_config=str(config))
    async with Cluster(settings) as c:
        yield c


async def test_callers_without_a_grant_are_refused(secured: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        for ns in ("shop", "bank"):
            async with http.post(f"{secured.url}/api/v1/namespaces", json={"name": ns, "retention": "1d"},
                                 headers={"Authorization": "Bearer ops-key"}) as resp:
                assert resp.status == 201, await resp.text()
    shop = await Client.connect(secured.url, namespace="shop", api_key="shop-worker-key")
    cards = await Client.connect(secured.url, namespace="shop", api_key="cards-worker-key")
    bank = await Client.connect(secured.url, namespace="bank", api_key="bank-worker-key")
    wid = f"grant-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(shop, task_queue="orders", workflows=[Waits], activities=[outside]):
            await shop.start_workflow(Waits.run, "x", id=wid, task_queue="orders")
            token = await _token(wid)
            refusals = []
            for c, kw in [(cards, {"task_token": token}), (cards, {"workflow_id": wid, "activity_id": "the-activity"}),
                          (bank, {"task_token": token}), (bank, {"workflow_id": wid, "activity_id": "the-activity"})]:
                for call in ("complete", "heartbeat"):
                    h = c.get_async_activity_handle(**kw)
                    with pytest.raises(RPCError) as refused:
                        await (h.complete("stolen") if call == "complete" else h.heartbeat())
                    refusals.append((next(iter(kw)), c.api_key, call, refused.value.status, refused.value.error_type))
            # Another queue's worker: 403 by token; by ids, 404 ActivityNotFound, as if the
            # activity did not run. Another namespace's: its own namespace has no such run.
            assert all(r[3] == 403 for r in refusals if r[1] == "cards-worker-key" and r[0] == "task_token"), refusals
            assert all(r[3:] == (404, "ActivityNotFound") for r in refusals
                       if r[1] == "cards-worker-key" and r[0] == "workflow_id"), refusals
            assert all(r[3] in (403, 404) for r in refusals if r[1] == "bank-worker-key"), refusals
            hidden = await _by_ids_refusal(cards, wid)
            await shop.get_async_activity_handle(workflow_id=wid, activity_id="the-activity").complete("mine")
            assert await shop.get_workflow_handle(wid).result(timeout=20) == "mine"
            # Once the activity is over, the same caller gets the very same answer: it could
            # not tell that the activity existed.
            assert await _by_ids_refusal(cards, wid) == hidden
    finally:
        for c in (shop, cards, bank):
            await c.close()


async def _by_ids_refusal(c: Client, wid: str) -> tuple[int, str, str, str | None]:
    with pytest.raises(RPCError) as refused:
        await c.get_async_activity_handle(workflow_id=wid, activity_id="the-activity").complete("probe")
    return refused.value.status, refused.value.error_type, refused.value.message, refused.value.field


@workflow.defn
class WaitsWithBackoff:
    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity(
            outside, "backoff", start_to_close_timeout=timedelta(seconds=30), activity_id="the-activity",
            retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=3))))


async def test_by_ids_no_attempt_runs_during_the_retry_backoff(client: Client) -> None:
    # The attempt after a failure waits out its backoff before any worker runs it: by ids,
    # nothing is running then (404), rather than that attempt completed before it ran.
    queue = "q-hostile-async-backoff"
    wid = f"backoff-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[WaitsWithBackoff], activities=[outside]):
        await client.start_workflow(WaitsWithBackoff.run, id=wid, task_queue=queue)
        await _token(wid)
        by_ids = client.get_async_activity_handle(workflow_id=wid, activity_id="the-activity")
        await by_ids.fail(RuntimeError("first attempt"))

        async def retried() -> bool:
            events = await client.get_workflow_handle(wid).describe()
            return any(a.get("attempt") == 2 for a in events.get("pending_activities") or [])

        await eventually(retried, timeout=20, what="the failure taken and the retry scheduled")
        with pytest.raises(RPCError) as waiting:
            await by_ids.complete("before the attempt ran")
        assert waiting.value.status == 404 and isinstance(waiting.value, ActivityNotFoundError), waiting.value
        tokens: list[str] = await eventually(lambda: TOKENS[wid][1:], timeout=20, what="the second attempt")
        await by_ids.complete("second attempt")
        assert await client.get_workflow_handle(wid).result(timeout=20) == "second attempt"
        assert len(tokens) == 1


@workflow.defn
class TwoOfOneId:
    @workflow.run
    async def run(self) -> list[str]:
        calls = [workflow.execute_activity(outside, note, start_to_close_timeout=timedelta(seconds=30),
                                           activity_id="same") for note in ("first", "second")]
        return [str(r) for r in await asyncio.gather(*calls)]


async def test_two_pending_activities_cannot_share_an_activity_id(client: Client) -> None:
    # By ids, an activity id must name one activity: a task that would schedule a second
    # with the id of a pending one fails (BadCommand), as Temporal's does.
    queue = "q-hostile-async-same-id"
    wid = f"same-id-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[TwoOfOneId], activities=[outside]):
        handle = await client.start_workflow(TwoOfOneId.run, id=wid, task_queue=queue)

        async def refused() -> list[dict[str, object]]:
            return [e for e in await handle.history() if e["event_type"] == "WorkflowTaskFailed"]

        failed = await eventually(refused, timeout=20, what="the task refused")
        attributes = failed[0]["attributes"]
        assert isinstance(attributes, dict) and attributes["cause"] == "BadCommand", attributes
        assert "activity_id 'same' is in use" in attributes["failure"]["message"], attributes
        assert "ActivityTaskScheduled" not in [e["event_type"] for e in await handle.history()]
        await handle.terminate("done")
