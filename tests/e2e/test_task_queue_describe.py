"""``kadence task-queue describe`` (and ``GET .../task-queues/{name}``, ``client.describe_task_queue``)
against a whole cluster: the pollers with their identities, the backlog of a queue nobody
polls, and the same answer from the owner's internal API for a frontend in another process."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result

from kadence import Client, Worker
from kadence._cli.task_queue import task_queue as task_queue_group
from kadence.cli import main as kadence_main
from services.cluster import Cluster
from services.common.matching import MatchingClient
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(120)


async def cli(cluster: Cluster, *args: str) -> Result:
    env = {"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default", "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, task_queue_group, list(args), env=env)


def _kind(description: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(k for k in description["kinds"] if k["kind"] == kind)


async def test_pollers_with_their_identity_and_a_backlog_nobody_polls(
        client: Client, cluster: Cluster, fresh_dsn: str) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"tq-{tag}"
    async with Worker(client, task_queue=queue, workflows=[EchoWorkflow], activities=[echo],
                      identity=f"worker-{tag}"):
        async def both_kinds_polled() -> dict[str, Any] | None:
            d = await client.describe_task_queue(queue)
            polled = all(p["identity"] == f"worker-{tag}" for k in ("workflow", "activity")
                         for p in _kind(d, k)["pollers"])
            return d if polled and all(_kind(d, k)["pollers"] for k in ("workflow", "activity")) else None

        described = await eventually(both_kinds_polled, timeout=20, what="both kinds show the worker")
        assert described["pollers_known"] is True and described["task_queue"] == queue
        assert _kind(described, "workflow")["last_poll_time"].endswith("Z")

        table = await cli(cluster, "describe", queue)
        assert table.exit_code == 0, table.output
        assert f"worker-{tag}" in table.output and "Workflow pollers" in table.output
        as_json = await cli(cluster, "describe", queue, "-o", "json")
        assert as_json.exit_code == 0 and json.loads(as_json.output)["task_queue"] == queue

        # A frontend in another process asks the owner over matching's internal API.
        pool = await asyncpg.create_pool(fresh_dsn, min_size=1, max_size=2)
        remote = MatchingClient(pool, 2)
        try:
            stats = await remote.describe_queue("default", queue)
        finally:
            await remote.close()
            await pool.close()
        assert stats is not None and {s.kind for s in stats} == {"workflow", "activity"}
        assert all(s.recent_pollers[0].identity == f"worker-{tag}" for s in stats)

    # Nobody polls this one: its task waits, and the CLI says so.
    nobody = f"tq-nobody-{tag}"
    await client.start_workflow(EchoWorkflow.run, "hi", id=f"tq-wf-{tag}", task_queue=nobody)

    async def waiting() -> dict[str, Any] | None:
        d = await client.describe_task_queue(nobody)
        return d if _kind(d, "workflow")["tasks_waiting"] >= 1 else None

    stuck = await eventually(waiting, timeout=20, what="the workflow task waits on the queue")
    assert _kind(stuck, "workflow")["pollers"] == [] and _kind(stuck, "activity")["tasks_waiting"] == 0
    table = await cli(cluster, "describe", nobody)
    assert table.exit_code == 0 and "Workflow tasks wait and no worker polled" in table.output

    missing = await cli(cluster, "describe", queue, "-n", "no-such-namespace")
    assert missing.exit_code == 3 and "NamespaceNotFound" in missing.output


def test_kadence_task_queue_is_mounted_on_the_kadence_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert kadence_main(["task-queue", "--help"]) == 0
    assert "pollers and backlog" in capsys.readouterr().out
    assert kadence_main(["task-queue", "describe"]) == 2  # NAME missing
