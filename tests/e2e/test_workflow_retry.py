"""The workflow retry policy through the whole Kadence (real broker and PostgreSQL): a child
that fails twice then succeeds under a retry policy gives its parent the result; a child
whose attempts run out gives it the last failure (the attempts visible in describe); a
non-retryable error type is not retried; a top-level workflow is retried and its
``result()`` follows to the last run; a run timeout is retried; the audit replays the chains."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from kadence import ApplicationError, ChildWorkflowError, Client, Worker, WorkflowFailureError, workflow
from kadence.common import RetryPolicy
from kadence.exceptions import TerminatedError, WorkflowNotFoundError
from services.cluster import Cluster
from services.history.audit import audit

from ..helpers import eventually
from .test_audit import _published
from .test_child_workflows import _ids_on_two_shards


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-wfretry"
FAST = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0, maximum_attempts=5,
                   non_retryable_error_types=["Fatal"])
SLOW = RetryPolicy(initial_interval=timedelta(seconds=3), maximum_attempts=2)


@workflow.defn
class Flaky:
    """Fails (retryably) until its attempt ``succeed_on``; ``fatal``: fails with a non-retryable type."""

    @workflow.run
    async def run(self, succeed_on: int, fatal: bool = False) -> str:
        attempt = workflow.info().attempt
        if fatal:
            raise ApplicationError("cannot go on", type="Fatal")
        if attempt < succeed_on:
            raise ApplicationError(f"attempt {attempt} failed", type="Flaky")
        return f"ok on attempt {attempt}"


@workflow.defn
class Sleepy:
    """Its first attempt outlives its run timeout; the next one returns at once."""

    @workflow.run
    async def run(self) -> str:
        attempt = workflow.info().attempt
        if attempt == 1:
            await workflow.sleep(60)
        return f"woke on attempt {attempt}"


@workflow.defn
class Waiter:
    """Its first attempt fails at once; the next one waits for the signal ``go``."""

    def __init__(self) -> None:
        self.word: str | None = None

    @workflow.signal
    def go(self, word: str) -> None:
        self.word = word

    @workflow.run
    async def run(self) -> str:
        attempt = workflow.info().attempt
        if attempt == 1:
            raise ApplicationError("not yet", type="Flaky")
        await workflow.wait_condition(lambda: self.word is not None)
        return f"{self.word} on attempt {attempt}"


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, child_id: str, succeed_on: int, maximum_attempts: int) -> str:
        policy = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0,
                             maximum_attempts=maximum_attempts)
        try:
            return str(await workflow.execute_child_workflow(Flaky.run, succeed_on, id=child_id,
                                                             retry_policy=policy))
        except ChildWorkflowError as err:
            assert isinstance(err.cause, ApplicationError)
            return f"child failed: {err.cause.type} {err.cause.message}"


@workflow.defn
class Holder:
    """Starts a Waiter child that retries slowly, and waits for ever."""

    @workflow.run
    async def run(self, child_id: str) -> None:
        await workflow.start_child_workflow(Waiter.run, id=child_id, retry_policy=SLOW)
        await workflow.wait_condition(lambda: False)


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Flaky, Sleepy, Parent, Waiter, Holder])


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def _audit_clean(cluster: Cluster, runs: int) -> None:
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs >= runs


async def test_a_child_that_fails_twice_then_succeeds_gives_its_parent_the_result(
        cluster: Cluster, client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        result = await client.execute_workflow(Parent.run, child_id, 3, 5, id=parent_id, task_queue=QUEUE)
    assert result == "ok on attempt 3"
    parent_events = await client.get_workflow_handle(parent_id).history()
    kinds = _types(parent_events)
    assert kinds.count("ChildWorkflowExecutionCompleted") == 1 and "ChildWorkflowExecutionFailed" not in kinds
    initiated = next(e for e in parent_events if e["event_type"] == "StartChildWorkflowExecutionInitiated")
    assert initiated["attributes"]["retry_policy"]["maximum_attempts"] == 5
    child = client.get_workflow_handle(child_id)
    described = await child.describe()
    assert described["attempt"] == 3 and described["status"] == "Completed"
    last = await child.history()
    started = last[0]["attributes"]
    assert started["attempt"] == 3 and started["first_workflow_task_backoff_ms"] == 200
    assert started["parent_workflow_id"] == parent_id and started["continued_execution_run_id"]
    # The backoff is a durable timer: the first workflow task comes after it.
    assert last[1]["event_type"] == "WorkflowTaskScheduled"
    assert last[1]["event_time"] >= last[0]["event_time"] + 200
    # The runs before: each failed naming the run that retried it.
    first = await client.get_workflow_handle(child_id, run_id=started["continued_execution_run_id"]).history()
    assert first[-1]["event_type"] == "WorkflowExecutionFailed" and first[-1]["attributes"]["new_run_id"] == \
        (await child.describe())["run_id"]
    await _audit_clean(cluster, 4)


async def test_a_child_whose_attempts_run_out_gives_its_parent_the_last_failure(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        result = await client.execute_workflow(Parent.run, child_id, 10, 2, id=parent_id, task_queue=QUEUE)
    assert result == "child failed: Flaky attempt 2 failed"
    described = await client.get_workflow_handle(child_id).describe()
    assert described["attempt"] == 2 and described["status"] == "Failed" and described["new_run_id"] is None
    kinds = _types(await client.get_workflow_handle(parent_id).history())
    assert kinds.count("ChildWorkflowExecutionFailed") == 1


async def test_a_non_retryable_error_type_is_not_retried(client: Client) -> None:
    wid = f"fatal-{uuid.uuid4().hex[:8]}"
    async with _worker(client):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(Flaky.run, 1, True, id=wid, task_queue=QUEUE, retry_policy=FAST)
    assert isinstance(caught.value.cause, ApplicationError) and caught.value.cause.type == "Fatal"
    handle = client.get_workflow_handle(wid)
    assert (await handle.describe())["attempt"] == 1
    events = await handle.history()
    assert events[-1]["event_type"] == "WorkflowExecutionFailed" and events[-1]["attributes"]["new_run_id"] is None


async def test_a_top_level_workflow_is_retried_and_its_result_follows_to_the_last_run(
        cluster: Cluster, client: Client) -> None:
    wid = f"flaky-{uuid.uuid4().hex[:8]}"
    async with _worker(client):
        handle = await client.start_workflow(Flaky.run, 2, id=wid, task_queue=QUEUE, retry_policy=FAST)
        first_run = handle.run_id
        assert await handle.result(timeout=30) == "ok on attempt 2"
        # execute_workflow follows the same way.
        again = await client.execute_workflow(Flaky.run, 3, id=f"{wid}-x", task_queue=QUEUE, retry_policy=FAST)
        assert again == "ok on attempt 3"
    described = await client.get_workflow_handle(wid).describe()
    assert described["attempt"] == 2 and described["run_id"] != first_run
    first = await client.get_workflow_handle(wid, run_id=first_run).describe()
    assert first["status"] == "Failed" and first["new_run_id"] == described["run_id"] and first["attempt"] == 1
    # The web UI's run pages say so.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/ui/namespaces/default/workflows/{wid}") as answer:
            page = await answer.text()
        async with http.get(f"{cluster.url}/ui/namespaces/default/workflows/{wid}",
                            params={"run_id": first_run}) as answer:
            first_page = await answer.text()
    assert "Retried from" in page and 'id="attempt">2 ' in page
    assert "Retried as" in first_page and described["run_id"] in first_page
    await _audit_clean(cluster, 5)


async def test_a_run_timeout_is_retried(client: Client) -> None:
    wid = f"sleepy-{uuid.uuid4().hex[:8]}"
    async with _worker(client):
        result = await client.execute_workflow(Sleepy.run, id=wid, task_queue=QUEUE, run_timeout=timedelta(seconds=1),
                                               retry_policy=FAST)
    assert result == "woke on attempt 2"
    events = await client.get_workflow_handle(wid).history()
    first = await client.get_workflow_handle(wid, run_id=events[0]["attributes"]["continued_execution_run_id"]).history()
    assert first[-1]["event_type"] == "WorkflowExecutionTimedOut" and first[-1]["attributes"]["new_run_id"]


async def test_a_start_over_kafka_carries_its_retry_policy(cluster: Cluster, client: Client) -> None:
    from kadence.kafka import KafkaIngress

    wid = f"kafka-flaky-{uuid.uuid4().hex[:8]}"
    async with KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        reply = await kafka.start_workflow("default", wid, "Flaky", QUEUE, [2], retry_policy=FAST)
    assert reply.ok
    async with _worker(client):
        assert await client.get_workflow_handle(wid).result(timeout=30) == "ok on attempt 2"



async def _in_backoff(client: Client, wid: str) -> dict[str, Any]:
    async def retried() -> dict[str, Any] | None:
        try:
            described = await client.get_workflow_handle(wid).describe()
        except WorkflowNotFoundError:  # a child not started yet
            return None
        return described if described["attempt"] == 2 else None
    return await eventually(retried, timeout=20, what="the retry run")


async def test_a_signal_during_the_backoff_waits_for_it_and_reaches_the_retried_run(client: Client) -> None:
    wid = f"waiter-{uuid.uuid4().hex[:8]}"
    async with _worker(client):
        handle = await client.start_workflow(Waiter.run, id=wid, task_queue=QUEUE, retry_policy=SLOW)
        await _in_backoff(client, wid)
        await client.get_workflow_handle(wid).signal(Waiter.go, "hello")
        assert await handle.result(timeout=30) == "hello on attempt 2"
    events = await client.get_workflow_handle(wid).history()
    kinds = _types(events)
    # No workflow task before the backoff's end, the signal notwithstanding.
    assert kinds[:3] == ["WorkflowExecutionStarted", "WorkflowExecutionSignaled", "WorkflowTaskScheduled"], kinds
    assert events[2]["event_time"] >= events[0]["event_time"] + 3000


async def test_a_run_terminated_during_the_backoff_ends_the_chain(client: Client) -> None:
    wid = f"stopped-{uuid.uuid4().hex[:8]}"
    async with _worker(client):
        handle = await client.start_workflow(Waiter.run, id=wid, task_queue=QUEUE, retry_policy=SLOW)
        await _in_backoff(client, wid)
        await client.get_workflow_handle(wid).terminate("enough")
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result(timeout=30)
    assert caught.value.status == "Terminated" and isinstance(caught.value.cause, TerminatedError)
    assert _types(await client.get_workflow_handle(wid).history()) == ["WorkflowExecutionStarted",
                                                                      "WorkflowExecutionTerminated"]


async def test_the_parent_close_policy_reaches_a_child_retrying(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        await client.start_workflow(Holder.run, child_id, id=parent_id, task_queue=QUEUE)
        await _in_backoff(client, child_id)
        await client.get_workflow_handle(parent_id).terminate("done")

        async def terminated() -> bool:
            return (await client.get_workflow_handle(child_id).describe())["status"] == "Terminated"
        await eventually(terminated, timeout=20, what="the retried child terminated")
    described = await client.get_workflow_handle(child_id).describe()
    assert described["attempt"] == 2
