"""The built-in ``__stack_trace`` query against a whole cluster: a workflow blocked on
``workflow.wait_condition`` names that line through ``handle.query``, ``kadence workflow
describe`` shows it in a section, and says so clearly when no worker answers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from click.testing import CliRunner, Result

from kadence import Client, Worker, workflow
from kadence._cli.workflow import workflow as workflow_group
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)

WAIT_LINE = "await workflow.wait_condition(lambda: self.approved)  # parked here"


@workflow.defn(name="StackParked")
class StackParked:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.approved)  # parked here
        return "approved"

    @workflow.signal
    def approve(self) -> None:
        self.approved = True


async def cli(cluster: Cluster, *args: str) -> Result:
    env = {"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default", "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, workflow_group, list(args), env=env)


async def test_a_waiting_workflow_shows_where_it_waits(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"stack-{tag}"
    async with Worker(client, task_queue=queue, workflows=[StackParked]):
        handle = await client.start_workflow(StackParked.run, id=f"parked-{tag}", task_queue=queue)

        async def parked() -> str | None:
            text = await handle.query("__stack_trace")
            return text if WAIT_LINE in text else None

        text = await eventually(parked, timeout=20, what="the stack trace names the wait_condition line")
        assert text.startswith("Task workflow.run:") and "in StackParked.run" in text and __file__ in text

        described = await cli(cluster, "describe", "-w", f"parked-{tag}")
        assert described.exit_code == 0, described.output
        assert "Stack trace" in described.output and WAIT_LINE in described.output
        as_json = json.loads((await cli(cluster, "describe", "-w", f"parked-{tag}", "-o", "json",
                                        "--stack-trace")).output)
        assert WAIT_LINE in as_json["stack_trace"]
        no_trace = json.loads((await cli(cluster, "describe", "-w", f"parked-{tag}", "-o", "json")).output)
        assert "stack_trace" not in no_trace  # JSON asks only when told to

    # No worker any more: describe still answers, and says why there is no stack trace.
    alone = await cli(cluster, "describe", "-w", f"parked-{tag}")
    assert alone.exit_code == 0, alone.output
    assert "no worker answered within 5 s" in alone.output and queue in alone.output
    await handle.signal(StackParked.approve)


async def test_a_run_no_worker_ever_ran_says_so_not_within_0_s(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"nobody-{tag}"
    await client.start_workflow("StackParked", id=f"orphan-{tag}", task_queue=queue)
    described = await cli(cluster, "describe", "-w", f"orphan-{tag}")
    assert described.exit_code == 0, described.output
    flat = " ".join(described.output.split())
    assert "within 0 s" not in flat, flat
    assert "first workflow task has not completed" in flat and queue in flat
