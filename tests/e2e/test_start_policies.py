"""Start policies, memo, the workflow task timeout and history limits end to end, on the
real broker and PostgreSQL, through the SDK and HTTP as a user would."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence import Client, Worker, WorkflowIDConflictPolicy, WorkflowIDReusePolicy, workflow
from kadence import kafka as ingress
from kadence.converter import DataConverter
from kadence.exceptions import ApplicationError, RPCError, WorkflowAlreadyStartedError, WorkflowFailureError
from kadence_protocol import avro
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.history.audit import audit
from tests.helpers import eventually

from .test_audit import _published
from .test_typed_payloads import XorZlibCodec, _database_text


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
QUEUE = "q-policies"


@workflow.defn
class Quick:
    @workflow.run
    async def run(self, fail: bool = False) -> dict[str, Any]:
        if fail:
            raise ApplicationError("asked to fail")
        info = workflow.info()
        return {"memo": workflow.memo(), "info_memo": dict(info.memo), "continued": info.continued_run_id}


@workflow.defn
class ContinuesOnce:
    @workflow.run
    async def run(self, again: bool) -> dict[str, Any]:
        if again:
            workflow.continue_as_new(False)
        return {"memo": workflow.memo(), "continued": workflow.info().continued_run_id is not None}


@workflow.defn
class ReplacesMemo:
    @workflow.run
    async def run(self, again: bool) -> dict[str, Any]:
        if again:
            workflow.continue_as_new(False, memo={"stage": 2})
        return workflow.memo()


MEMO_SECRET = "memo-secret-5d2e"


@workflow.defn
class ExtendsMemo:
    @workflow.run
    async def run(self, again: bool) -> dict[str, Any]:
        if again:
            workflow.continue_as_new(False, memo={**workflow.memo(), "stage": f"{MEMO_SECRET}-2"})
        return workflow.memo()


@workflow.defn
class Waits:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(days=1))
        return "woke"


@workflow.defn
class SleepsUntilSuggested:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        for _ in range(200):  # bounded
            info = workflow.info()
            if info.continue_as_new_suggested:
                return {"length": info.history_length, "size": info.history_size}
            await workflow.sleep(timedelta(milliseconds=10))
        return {}


@workflow.defn
class SleepsForever:
    @workflow.run
    async def run(self) -> str:
        for _ in range(200):  # bounded; history terminates it long before
            await workflow.sleep(timedelta(milliseconds=10))
        return "never terminated"


def _worker(client: Client, queue: str = QUEUE) -> Worker:
    return Worker(client, task_queue=queue,
                  workflows=[Quick, ContinuesOnce, ReplacesMemo, Waits, SleepsUntilSuggested, SleepsForever])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_reuse_policies_over_a_closed_run(client: Client) -> None:
    wid = _id("reuse")
    async with _worker(client):
        await client.execute_workflow(Quick.run, id=wid, task_queue=QUEUE)  # closes Completed
        for policy in (WorkflowIDReusePolicy.REJECT_DUPLICATE, WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY):
            with pytest.raises(WorkflowAlreadyStartedError):
                await client.start_workflow(Quick.run, id=wid, task_queue=QUEUE, id_reuse_policy=policy)
        # The default reuses the id; a failed run may then be followed under FAILED_ONLY.
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(Quick.run, True, id=wid, task_queue=QUEUE)
        again = await client.start_workflow(Quick.run, id=wid, task_queue=QUEUE,
                                            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
        await again.result(timeout=30)


async def test_conflict_policies_over_a_running_run(cluster: Cluster, client: Client) -> None:
    wid = _id("conflict")
    async with _worker(client):
        first = await client.start_workflow(Waits.run, id=wid, task_queue=QUEUE)
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(Waits.run, id=wid, task_queue=QUEUE)
        same = await client.start_workflow(Waits.run, id=wid, task_queue=QUEUE,
                                           id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        assert same.run_id == first.run_id
        second = await client.start_workflow(Waits.run, id=wid, task_queue=QUEUE,
                                             id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
        assert second.run_id != first.run_id
        old = client.get_workflow_handle(wid, run_id=first.run_id)
        assert (await old.describe())["status"] == "Terminated"
        terminated = (await old.history())[-1]
        assert terminated["event_type"] == "WorkflowExecutionTerminated"
        assert "TerminateExisting" in terminated["attributes"]["reason"]
        third = await client.start_workflow(Waits.run, id=wid, task_queue=QUEUE,
                                            id_reuse_policy=WorkflowIDReusePolicy.TERMINATE_IF_RUNNING)
        assert third.run_id != second.run_id
        assert (await client.get_workflow_handle(wid, run_id=second.run_id).describe())["status"] == "Terminated"
        assert (await client.get_workflow_handle(wid).describe())["status"] == "Running"
        await client.get_workflow_handle(wid).terminate("done")
    await _audited(cluster)


async def _audited(cluster: Cluster) -> None:
    """The audit replays every run (history sizes included) and verifies its chain."""
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]


async def test_bad_policies_and_memo_are_refused_with_400(client: Client) -> None:
    body = {"workflow_id": _id("bad"), "workflow_type": "Quick", "task_queue": QUEUE}
    for extra, field in (({"id_reuse_policy": "Sometimes"}, "id_reuse_policy"),
                         ({"id_conflict_policy": "Maybe"}, "id_conflict_policy"), ({"memo": [1]}, "memo"),
                         ({"id_reuse_policy": 0}, "id_reuse_policy"), ({"id_conflict_policy": False},
                                                                         "id_conflict_policy")):
        with pytest.raises(RPCError) as caught:
            await client.transport.call("POST", "/workflows", body={**body, **extra})
        assert caught.value.status == 400 and field in str(caught.value)


async def test_the_memo_is_described_readable_in_the_workflow_and_carried_over(client: Client) -> None:
    memo = {"owner": "ops", "ticket": 42, "tags": ["a", "b"]}
    async with _worker(client):
        wid = _id("memo")
        result = await client.execute_workflow(Quick.run, id=wid, task_queue=QUEUE, memo=memo)
        assert result == {"memo": memo, "info_memo": memo, "continued": None}
        described = await client.get_workflow_handle(wid).describe()
        assert described["memo"] == memo and described["history_size_bytes"] > 0
        wid = _id("memo-can")
        result = await client.execute_workflow(ContinuesOnce.run, True, id=wid, task_queue=QUEUE, memo=memo)
        assert result == {"memo": memo, "continued": True}
        assert (await client.get_workflow_handle(wid).describe())["memo"] == memo
        wid = _id("memo-replaced")
        result = await client.execute_workflow(ReplacesMemo.run, True, id=wid, task_queue=QUEUE, memo=memo)
        assert result == {"stage": 2} and (await client.get_workflow_handle(wid).describe())["memo"] == {"stage": 2}
        wid = _id("no-memo")
        assert (await client.execute_workflow(Quick.run, id=wid, task_queue=QUEUE))["memo"] == {}
        assert (await client.get_workflow_handle(wid).describe())["memo"] is None


async def test_a_workflow_task_taken_by_a_worker_that_dies_times_out_and_another_worker_completes_it(
        client: Client) -> None:
    queue = _id("q-dies")
    wid = _id("wt-timeout")
    handle = await client.start_workflow(Quick.run, id=wid, task_queue=queue,
                                         workflow_task_timeout=timedelta(seconds=1))
    # A worker polls the task by hand and never answers.
    answer = await client.transport.call("POST", f"/task-queues/{queue}/workflow-tasks/poll",
                                         body={"identity": "dies", "max_tasks": 1, "wait_seconds": 20})
    assert [t["workflow_id"] for t in answer["tasks"]] == [wid]

    async def timed_out() -> bool:
        return "WorkflowTaskTimedOut" in [e["event_type"] for e in await handle.history()]

    await eventually(timed_out, timeout=30, what="WorkflowTaskTimedOut")
    async with _worker(client, queue):
        assert (await handle.result(timeout=30))["memo"] == {}
    kinds = [e["event_type"] for e in await handle.history()]
    timed = kinds.index("WorkflowTaskTimedOut")
    assert kinds[timed - 1] == "WorkflowTaskStarted" and kinds[timed + 1] == "WorkflowTaskScheduled"
    started = [e for e in await handle.history() if e["event_type"] == "WorkflowTaskStarted"]
    assert started[0]["attributes"]["identity"] == "dies"


@pytest.fixture
async def limited(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[tuple[Cluster, Client]]:
    """A cluster whose runs are told to continue as new past 20 events and terminated past 40."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    settings = dataclasses.replace(settings, history_warn_events=20, history_terminate_events=40)
    cluster = Cluster(settings)
    await cluster.start()
    try:
        client = await Client.connect(cluster.url, namespace="default")
        try:
            yield cluster, client
        finally:
            await client.close()
    finally:
        await cluster.stop()


async def test_history_limits_suggest_continue_as_new_then_terminate(limited: tuple[Cluster, Client]) -> None:
    cluster, client = limited
    async with _worker(client):
        told = await client.execute_workflow(SleepsUntilSuggested.run, id=_id("suggested"), task_queue=QUEUE)
        assert told["length"] > 20 and told["size"] > 0
        wid = _id("over")
        handle = await client.start_workflow(SleepsForever.run, id=wid, task_queue=QUEUE)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result(timeout=60)
        assert caught.value.status == "Terminated"
    last = (await handle.history())[-1]
    assert last["event_type"] == "WorkflowExecutionTerminated" and last["event_id"] > 40
    assert last["attributes"]["reason"].startswith("history limit exceeded: 41 events / ")
    assert last["attributes"]["reason"].endswith(" bytes")
    await _audited(cluster)


async def test_the_kafka_ingress_takes_the_policies_and_memo_and_refuses_a_bad_policy(cluster: Cluster,
                                                                                     client: Client) -> None:
    wid = _id("kafka-policy")
    async with ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        first = await kafka.start_workflow("default", wid, "Waits", "q-nobody", memo={"via": "kafka"})
        same = await kafka.start_workflow("default", wid, "Waits", "q-nobody",
                                          id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        refused = await kafka.start_workflow("default", wid, "Waits", "q-nobody")
        record = avro.decode(ingress.encode_start("default", wid, "Waits", "q-nobody", request_id="bad"))[1]
        bad = await kafka.send("default", wid, avro.encode("StartWorkflowExecution", {
            **record, "id_reuse_policy": "Sometimes", "reply_to": kafka.reply_to}), "bad")
    assert first.ok and same.ok and same.run_id == first.run_id
    assert not refused.ok and refused.error_type == "WorkflowAlreadyStarted"
    assert not bad.ok and bad.error_type == "InvalidArgument" and "id_reuse_policy" in (bad.error_message or "")
    assert (await client.get_workflow_handle(wid).describe())["memo"] == {"via": "kafka"}
    await client.get_workflow_handle(wid).terminate("done")


async def test_the_memo_goes_through_the_converter_and_the_payload_codec(cluster: Cluster) -> None:
    """Like any payload: typed values are converted, and with a codec neither the server's
    answers nor its database hold the memo's plaintext; the workflow and describe see it."""
    codec = XorZlibCodec()
    client = await Client.connect(cluster.url, data_converter=DataConverter(payload_codec=codec))
    plain = await Client.connect(cluster.url)
    wid, queue = _id("memo-codec"), "q-memo-codec"
    memo = {"owner": MEMO_SECRET, "at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC)}
    first = {"owner": MEMO_SECRET, "at": "2026-03-01T09:30:00+00:00"}  # no type hints: plain JSON
    try:
        async with Worker(client, task_queue=queue, workflows=[ExtendsMemo]):
            handle = await client.start_workflow(ExtendsMemo.run, True, id=wid, task_queue=queue, memo=memo)
            assert await handle.result(timeout=60) == {**first, "stage": f"{MEMO_SECRET}-2"}
        assert (await client.get_workflow_handle(wid, run_id=handle.run_id).describe())["memo"] == first
        # The start's handle describes the chain's current run, as Temporal's does.
        assert (await handle.describe())["memo"] == {**first, "stage": f"{MEMO_SECRET}-2"}
        assert (await client.get_workflow_handle(wid).describe())["memo"] == {**first, "stage": f"{MEMO_SECRET}-2"}
        for run_id in (handle.run_id, None):
            stored = (await plain.get_workflow_handle(wid, run_id=run_id).describe())["memo"]
            assert set(stored) == {"kadence-codec", "data"} and MEMO_SECRET not in str(stored)
        assert MEMO_SECRET not in str(await plain.get_workflow_handle(wid, run_id=handle.run_id).history())
    finally:
        await client.close()
        await plain.close()
    text = await _database_text(cluster.settings.database_url)
    assert MEMO_SECRET not in text and MEMO_SECRET.encode().hex() not in text
    await _audited(cluster)
