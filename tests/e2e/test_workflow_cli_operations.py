"""``kadence workflow cancel | update | reset`` and the batches (``cancel``, ``terminate``,
``signal`` with ``--query``) driven against a real cluster, as test_workflow_cli.py does:
their output, the confirmation prompt, and the exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kadence import ApplicationError, Client, Worker, workflow
from kadence._cli.workflow import workflow as workflow_group
from services.cluster import Cluster
from tests.helpers import eventually

from .test_workflow_cli import CliGreet, cli, ok


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(150)


@workflow.defn(name="CliCounter")
class CliCounter:
    def __init__(self) -> None:
        self.total = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return self.total

    @workflow.update
    def add(self, n: int) -> int:
        self.total += n
        return self.total

    @add.validator  # type: ignore[attr-defined]
    def check_add(self, n: int) -> None:
        if n < 0:
            raise ApplicationError("only positive amounts", type="Negative")

    @workflow.signal
    def finish(self) -> None:
        self.done = True


def summary_of(result: Result) -> dict[str, Any]:
    """A batch's JSON summary: stdout alone (the progress bar is on stderr). CliRunner echoes
    an answer typed at the prompt to stdout, as a terminal would show it: skipped."""
    assert result.exit_code == 0, (result.output, result.exception)
    summary: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{"):])
    return summary


async def cli_input(cluster: Cluster, text: str, *args: str) -> Result:
    env = {"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default", "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, workflow_group, list(args), env=env, input=text)


async def test_cancel_update_and_reset_of_one_workflow(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"cli-ops-{tag}"
    async with Worker(client, task_queue=queue, workflows=[CliGreet, CliCounter]):
        # update: the handler's result; a rejection exits 1 naming it.
        ok(await cli(cluster, "start", "-t", "CliCounter", "--tq", queue, "-w", f"count-{tag}"))
        assert json.loads(ok(await cli(cluster, "update", "-w", f"count-{tag}", "--name", "add", "-i", "5"))) == 5
        assert json.loads(ok(await cli(cluster, "update", "-w", f"count-{tag}", "--name", "add", "-i", "2",
                                       "--update-id", "once"))) == 7
        assert json.loads(ok(await cli(cluster, "update", "-w", f"count-{tag}", "--name", "add", "-i", "2",
                                       "--update-id", "once"))) == 7  # the same update id runs once
        rejected = await cli(cluster, "update", "-w", f"count-{tag}", "--name", "add", "-i", "-1")
        assert rejected.exit_code == 1 and "rejected" in rejected.output and "only positive" in rejected.output

        # cancel: the workflow code sees the cancellation and closes Canceled; again, or a
        # terminate or a signal of the closed run: exit 3 (not found), each saying it closed.
        ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", queue, "-w", f"greet-{tag}", "-i", '"Ada"',
                     "-i", "true"))
        assert "Cancel requested" in ok(await cli(cluster, "cancel", "-w", f"greet-{tag}", "--reason", "done"))
        canceled = await cli(cluster, "result", "-w", f"greet-{tag}")
        assert canceled.exit_code == 1 and "canceled" in canceled.output
        again = await cli(cluster, "cancel", "-w", f"greet-{tag}")
        assert again.exit_code == 3 and "already closed (Canceled)" in again.output, again.output
        run_id = json.loads(ok(await cli(cluster, "describe", "-w", f"greet-{tag}", "-o", "json")))["run_id"]
        for args in (["cancel"], ["terminate"], ["signal", "--name", "finish"]):
            closed = await cli(cluster, *args, "-w", f"greet-{tag}", "-r", run_id)
            assert closed.exit_code == 3 and "closed (Canceled)" in closed.output, (args, closed.output)
        for args in (["terminate"], ["signal", "--name", "finish"]):
            latest = await cli(cluster, *args, "-w", f"greet-{tag}")
            assert latest.exit_code == 3 and "has no open run" in latest.output, (args, latest.output)

        # reset: a new run goes on from the first task (and completes again); the links show.
        ok(await cli(cluster, "signal", "-w", f"count-{tag}", "--name", "finish"))
        assert json.loads(ok(await cli(cluster, "result", "-w", f"count-{tag}"))) == 7
        old = json.loads(ok(await cli(cluster, "describe", "-w", f"count-{tag}", "-o", "json")))["run_id"]
        new = json.loads(ok(await cli(cluster, "reset", "-w", f"count-{tag}", "--type", "first",
                                      "--reason", "bad deploy", "-o", "json")))
        assert new["workflow_id"] == f"count-{tag}" and new["run_id"] != old
        # The updates were accepted after the reset point and are not requests of the new run;
        # the signal is received again, so the run completes with the total it had at the start.
        assert json.loads(ok(await cli(cluster, "result", "-w", f"count-{tag}"))) == 0
        described = ok(await cli(cluster, "describe", "-w", f"count-{tag}", "-r", old))
        assert "Runs reset from it" in described and new["run_id"] in described
        assert "Reset from" in ok(await cli(cluster, "describe", "-w", f"count-{tag}"))
        printed = ok(await cli(cluster, "reset", "-w", f"count-{tag}", "-r", old, "-e", "3"))
        assert printed.startswith(f"Reset count-{tag}: new run ")

    bad = await cli(cluster, "reset", "-w", f"count-{tag}", "--event-id", "1")
    assert bad.exit_code == 2 and "InvalidResetPoint" in bad.output and "WorkflowExecutionStarted" in bad.output
    neither = await cli(cluster, "reset", "-w", f"count-{tag}")
    assert neither.exit_code == 2 and "--event-id or --type" in neither.output


async def _listed(cluster: Cluster, query: str, n: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(ok(await cli(cluster, "list", "-q", query, "-o", "json")))
    return runs if len(runs) == n else []


async def test_batches_by_query_with_prompt_progress_summary_and_exit_codes(client: Client,
                                                                            cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"nobody-{tag}"  # no worker: the runs stay open whatever they are sent
    for i in range(3):
        ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", queue, "-w", f"batch-{tag}-{i}", "-i", '"x"',
                     "-i", "true"))
    mine = f"TaskQueue = '{queue}'"
    running = mine + " AND ExecutionStatus = 'Running'"
    await eventually(lambda: _listed(cluster, running, 3), timeout=30, what="the three runs listed")

    # Declined (or no answer at all): nothing is done, exit 6.
    declined = await cli_input(cluster, "n\n", "terminate", "-q", running)
    assert declined.exit_code == 6 and "Terminate 3 workflow run(s)" in declined.output
    assert "nothing was terminated" in declined.output
    assert (await cli(cluster, "terminate", "-q", running)).exit_code == 6
    assert all(r["status"] == "Running" for r in json.loads(ok(await cli(cluster, "list", "-q", mine, "-o", "json"))))

    # Confirmed at the prompt: every run signalled; the summary (JSON for scripts).
    signalled = await cli_input(cluster, "y\n", "signal", "-q", running, "--name", "finish", "-i", '"hi"',
                                "-o", "json")
    assert "Signal" in signalled.stderr and "3/3" in signalled.stderr  # the progress bar
    assert summary_of(signalled) == {"operation": "signal", "query": running, "matched": 3, "succeeded": 3, "failed": []}
    for i in range(3):
        kinds = [e["event_type"] for e in await client.get_workflow_handle(f"batch-{tag}-{i}").history()]
        assert "WorkflowExecutionSignaled" in kinds
    table = ok(await cli(cluster, "cancel", "-q", running, "--yes"))
    assert "Matched" in table and "Canceled" in table and "3" in table

    done = summary_of(await cli(cluster, "terminate", "-q", running, "--yes", "--reason", "cleanup", "-o", "json"))
    assert done["succeeded"] == 3 and done["failed"] == []
    for i in range(3):
        assert (await client.get_workflow_handle(f"batch-{tag}-{i}").describe())["status"] == "Terminated"

    # Some fail (closed already), one succeeds: exit 5 and the failures listed.
    ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", queue, "-w", f"batch-{tag}-late", "-i", '"x"',
                 "-i", "true"))
    await eventually(lambda: _listed(cluster, mine, 4), timeout=30, what="the fourth run listed")
    partial = await cli(cluster, "terminate", "-q", mine, "--yes")
    assert partial.exit_code == 5, partial.output
    assert "Failures" in partial.output and "WorkflowNotFound" in partial.output
    assert (await client.get_workflow_handle(f"batch-{tag}-late").describe())["status"] == "Terminated"

    # Nothing matched: exit 0; usage errors: exit 2.
    none = await cli(cluster, "cancel", "-q", f"TaskQueue = 'none-{tag}'", "--yes")
    assert none.exit_code == 0 and "No workflows match" in none.output
    assert (await cli(cluster, "cancel", "-q", "  ", "--yes")).exit_code == 2
    assert (await cli(cluster, "terminate", "-w", "x", "-q", mine)).exit_code == 2
    assert (await cli(cluster, "signal", "--name", "finish")).exit_code == 2
    malformed = await cli(cluster, "terminate", "-q", "WorkflowTyp = 'x'", "--yes")
    assert malformed.exit_code == 2 and "did you mean WorkflowType?" in malformed.output
