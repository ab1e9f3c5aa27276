"""Worker answers over KADENCE_MAX_PAYLOAD_BYTES (set below the SDK's request limit).

They used to be refused with a 400 that the worker could do nothing about: the answer was
dropped, the task timed out and ran again, to be refused again, for ever. The frontend
refits them now (services/frontend/oversize.py): a result over the limit fails the
activity (PayloadTooLarge, not retried), a failure too long is cut short, and a workflow
task whose commands are too large fails with cause PayloadTooLarge.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from kadence import ActivityError, ApplicationError, Client, RetryPolicy, Worker, activity, workflow
from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from tests.e2e.conftest import _settings
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)

LIMIT = 300


@activity.defn
async def large() -> str:
    return "y" * (LIMIT * 2)


@activity.defn
async def fails_at_length() -> str:
    raise RuntimeError("z" * (LIMIT * 2))


@workflow.defn
class Calls:
    @workflow.run
    async def run(self, name: str) -> str:
        fn = large if name == "large" else fails_at_length
        try:
            await workflow.execute_activity(fn, start_to_close_timeout=timedelta(seconds=2),
                                            retry_policy=RetryPolicy(maximum_attempts=1))
        except ActivityError as err:
            assert isinstance(err.cause, ApplicationError)
            message = err.cause.message  # not all of it: the workflow's result has the limit too
            return f"{err.cause.type}: {len(message.encode())} bytes, {message[:4]}...{message[-40:]}"
        return "completed"


@workflow.defn
class LargeResult:
    @workflow.run
    async def run(self) -> str:
        return "x" * (LIMIT * 2)


@pytest.fixture(scope="module")
async def client(module_broker: EmbeddedBroker, module_dsn: str) -> AsyncIterator[Client]:
    """One cluster and worker for the module: each test starts its own workflow id."""
    settings = dataclasses.replace(_settings(module_broker, module_dsn), max_payload_bytes=LIMIT)
    async with Cluster(settings) as cluster, await Client.connect(cluster.url, namespace="default") as c, \
            Worker(c, task_queue="q-limit", workflows=[Calls, LargeResult], activities=[large, fails_at_length]):
        yield c


async def test_an_activity_result_over_the_limit_fails_the_activity(client: Client) -> None:
    handle = await client.start_workflow(Calls.run, "large", id=f"large-{uuid.uuid4().hex[:6]}", task_queue="q-limit")
    # Before: the attempt timed out (2 s) and, its one attempt spent, the workflow saw a timeout.
    answer = await handle.result(timeout=30)
    assert answer.startswith("PayloadTooLarge: ") and answer.endswith(f"is over the limit of {LIMIT} bytes"), answer


async def test_a_failure_over_the_limit_is_cut_short(client: Client) -> None:
    handle = await client.start_workflow(Calls.run, "fails", id=f"fails-{uuid.uuid4().hex[:6]}", task_queue="q-limit")
    answer = await handle.result(timeout=30)
    # Before: the failure was refused, the attempt timed out and the workflow saw a timeout.
    assert answer == f"RuntimeError: {LIMIT} bytes, zzzz...zz [cut: over KADENCE_MAX_PAYLOAD_BYTES]", answer


async def test_a_workflow_task_with_a_command_over_the_limit_fails(client: Client) -> None:
    handle = await client.start_workflow(LargeResult.run, id=f"result-{uuid.uuid4().hex[:6]}", task_queue="q-limit")

    async def failed_for_size() -> list[dict[str, Any]]:
        events = await handle.history()
        return [e for e in events
                if e["event_type"] == "WorkflowTaskFailed" and e["attributes"]["cause"] == "PayloadTooLarge"]

    # Before: no answer reached history; the task only timed out (10 s each), silently.
    failed: list[dict[str, Any]] = await eventually(failed_for_size, timeout=8, what="a WorkflowTaskFailed with cause PayloadTooLarge")
    assert "commands[0].attributes.result" in failed[0]["attributes"]["failure"]["message"]
