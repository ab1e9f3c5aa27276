"""A workflow task that keeps failing does not grow its history (services/history/transient.py),
through the whole Kadence (real broker and PostgreSQL): its code raises until a module flag
is cleared (a fixed deploy); meanwhile describe shows the attempts and the last failure and
history holds one WorkflowTaskFailed; then the task completes, on the attempt workflow.info()
names, and the audit replays the run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster

from ..helpers import eventually
from .test_workflow_cli import cli, ok
from .test_workflow_retry import _audit_clean


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
QUEUE = "q-wtfail"
# Workflow ids whose code is "broken": it raises in its first workflow task.
BROKEN: set[str] = set()


@workflow.defn
class Stumbling:
    def __init__(self) -> None:
        self.words: list[str] = []

    @workflow.signal
    def word(self, word: str) -> None:
        self.words.append(word)

    @workflow.run
    async def run(self) -> str:
        if workflow.info().workflow_id in BROKEN:
            raise RuntimeError(f"bug on attempt {workflow.info().workflow_task_attempt}")
        return f"ok on task attempt {workflow.info().workflow_task_attempt} with {self.words}"


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def test_a_task_failing_again_and_again_is_recorded_once_and_described_with_its_attempts(
        cluster: Cluster, client: Client) -> None:
    wid = f"stumbling-{uuid.uuid4().hex[:8]}"
    BROKEN.add(wid)
    async with Worker(client, task_queue=QUEUE, workflows=[Stumbling]):
        handle = await client.start_workflow(Stumbling.run, id=wid, task_queue=QUEUE)

        async def failing_at_attempt_4() -> dict[str, Any] | None:
            task = (await handle.describe())["workflow_task"]
            return task if task is not None and task["attempt"] >= 4 else None

        # Attempts 2 and 3 follow at once and after 1 s; the fourth is due 2 s later.
        task = await eventually(failing_at_attempt_4, timeout=30, what="the fourth attempt")
        assert task["failures"] >= 3 and task["last_failure"]["message"].startswith("bug on attempt ")
        assert task["state"] in ("Backoff", "Scheduled", "Started")
        kinds = _types(await handle.history())
        assert kinds == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                         "WorkflowTaskFailed"]
        # kadence workflow describe shows it too (without the stack trace: no task completes).
        table = ok(await cli(cluster, "describe", "-w", wid, "--no-stack-trace"))
        assert "Workflow task failing" in table and "RuntimeError: bug on attempt" in table
        # A signal while the task fails is recorded (and writes the outstanding attempt first, if any).
        await handle.signal(Stumbling.word, "hello")
        BROKEN.discard(wid)  # the fix is deployed
        result = await handle.result(timeout=60)
    assert result.startswith("ok on task attempt ") and result.endswith("with ['hello']")
    attempt = int(result.split()[4])
    assert attempt >= 4  # the attempt describe showed, or a later one
    events = await handle.history()
    kinds = _types(events)
    assert kinds.count("WorkflowTaskFailed") <= 2  # the streak's first, and one the signal wrote
    assert kinds[-1] == "WorkflowExecutionCompleted"
    last_scheduled = [e for e in events if e["event_type"] == "WorkflowTaskScheduled"][-1]
    assert last_scheduled["attributes"]["attempt"] == attempt
    assert (await handle.describe())["workflow_task"] is None
    await _audit_clean(cluster, 1)


# How often FailsThrice's code ran, per workflow id: its first three runs raise.
RUNS: dict[str, int] = {}


@workflow.defn
class FailsThrice:
    @workflow.run
    async def run(self) -> int:
        wid = workflow.info().workflow_id
        RUNS[wid] = RUNS.get(wid, 0) + 1
        if RUNS[wid] <= 3:
            raise RuntimeError(f"failure {RUNS[wid]}")
        return workflow.info().workflow_task_attempt


async def test_a_workflow_that_raises_three_times_then_succeeds_has_one_failed_task(
        cluster: Cluster, client: Client) -> None:
    wid = f"thrice-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[FailsThrice]):
        assert await client.execute_workflow(FailsThrice.run, id=wid, task_queue=QUEUE) == 4
    events = await client.get_workflow_handle(wid).history()
    assert _types(events) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                              "WorkflowTaskFailed", "WorkflowTaskScheduled", "WorkflowTaskStarted",
                              "WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
    assert events[3]["attributes"]["failure"]["message"] == "failure 1"
    assert events[4]["attributes"]["attempt"] == 4 and events[4]["event_id"] == 5
    await _audit_clean(cluster, 1)
