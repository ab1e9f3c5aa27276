"""``kadence workflow ...`` driven against a real cluster: click's CliRunner in a thread (the
CLI runs its own event loop, the cluster runs in the test's)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kadence import ApplicationError, Client, Worker, workflow
from kadence._cli.workflow import workflow as workflow_group
from kadence.cli import main as kadence_main
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)


@workflow.defn(name="CliGreet")
class CliGreet:
    def __init__(self) -> None:
        self.greeting = "hello"
        self.done = False

    @workflow.run
    async def run(self, name: str, wait: bool) -> str:
        if wait:
            await workflow.wait_condition(lambda: self.done)
        return f"{self.greeting}, {name}"

    @workflow.signal
    def finish(self, greeting: str) -> None:
        self.greeting, self.done = greeting, True

    @workflow.query
    def current(self) -> str:
        return self.greeting


@workflow.defn(name="CliFail")
class CliFail:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("no such customer", type="NotFound", non_retryable=True)


async def cli(cluster: Cluster, *args: str) -> Result:
    env = {"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default", "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, workflow_group, list(args), env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


async def test_start_signal_query_result_describe_show_list_count(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"cli-{tag}"
    async with Worker(client, task_queue=queue, workflows=[CliGreet, CliFail]):
        started = json.loads(ok(await cli(cluster, "start", "-t", "CliGreet", "--task-queue", queue,
                                          "-w", f"greet-{tag}", "-i", '"Ada"', "-i", "true", "-o", "json")))
        assert started["workflow_id"] == f"greet-{tag}" and started["run_id"]
        assert json.loads(ok(await cli(cluster, "query", "-w", f"greet-{tag}", "--name", "current"))) == "hello"
        ok(await cli(cluster, "signal", "-w", f"greet-{tag}", "--name", "finish", "-i", '"bonjour"'))
        assert json.loads(ok(await cli(cluster, "result", "-w", f"greet-{tag}"))) == "bonjour, Ada"
        assert json.loads(ok(await cli(cluster, "execute", "-t", "CliGreet", "--tq", queue, "-w", f"quick-{tag}",
                                       "-i", '"Bob"', "-i", "false"))) == "hello, Bob"

        failed = await cli(cluster, "execute", "-t", "CliFail", "--tq", queue, "-w", f"fail-{tag}")
        assert failed.exit_code == 1 and "no such customer" in failed.output

    # A failed run's describe says why, over HTTP and in the table.
    failed_run = json.loads(ok(await cli(cluster, "describe", "-w", f"fail-{tag}", "-o", "json")))
    assert (failed_run["failure"]["type"], failed_run["failure"]["message"]) == ("NotFound", "no such customer")
    assert failed_run["cancel_details"] is None
    assert "NotFound: no such customer" in ok(await cli(cluster, "describe", "-w", f"fail-{tag}"))
    described = json.loads(ok(await cli(cluster, "describe", "-w", f"greet-{tag}", "-o", "json")))
    assert described["status"] == "Completed" and described["run_id"] == started["run_id"]
    table = ok(await cli(cluster, "describe", "-w", f"greet-{tag}"))
    assert "Completed" in table and started["run_id"] in table

    # show --output json is exactly what handle.history() gives.
    history = await client.get_workflow_handle(f"greet-{tag}").history()
    assert json.loads(ok(await cli(cluster, "show", "-w", f"greet-{tag}", "-o", "json"))) == history
    timeline = ok(await cli(cluster, "show", "-w", f"greet-{tag}"))
    for line in ("WorkflowExecutionStarted", "workflow_type=CliGreet", "WorkflowExecutionSignaled",
                 "signal_name=finish", "WorkflowExecutionCompleted"):
        assert line in timeline

    mine = f"TaskQueue = '{queue}'"

    async def listed() -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(ok(await cli(cluster, "list", "-q", mine, "-o", "json")))
        return runs if len(runs) == 3 and all(r["status"] != "Running" for r in runs) else []
    runs = await eventually(listed, timeout=30, what="the three runs listed")
    assert {r["workflow_id"]: r["status"] for r in runs} == {
        f"greet-{tag}": "Completed", f"quick-{tag}": "Completed", f"fail-{tag}": "Failed"}
    table = ok(await cli(cluster, "list", "-q", mine + " AND ExecutionStatus = 'Failed'"))
    assert f"fail-{tag}" in table and f"greet-{tag}" not in table
    assert ok(await cli(cluster, "count", "-q", mine)).strip() == "3"
    grouped = json.loads(ok(await cli(cluster, "count", "-q", mine + " GROUP BY ExecutionStatus", "-o", "json")))
    assert grouped == {"count": 3, "groups": [{"group_values": ["Completed"], "count": 2},
                                              {"group_values": ["Failed"], "count": 1}]}
    cut = await cli(cluster, "list", "-q", mine, "--limit", "2", "-o", "json")
    assert cut.exit_code == 0 and len(json.loads(cut.stdout)) == 2, cut.output
    assert "More runs match than the 2 shown" in cut.stderr, cut.stderr
    whole = await cli(cluster, "list", "-q", mine, "--limit", "3", "-o", "json")
    assert len(json.loads(ok(whole))) == 3 and "More runs" not in whole.stderr


async def test_terminate_and_the_exit_codes_scripts_rely_on(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", f"nobody-{tag}", "-w", f"stuck-{tag}",
                 "-i", '"x"', "-i", "true"))
    ok(await cli(cluster, "terminate", "-w", f"stuck-{tag}", "--reason", "stuck"))
    terminated = await cli(cluster, "result", "-w", f"stuck-{tag}")
    assert terminated.exit_code == 1 and "terminated" in terminated.output
    missing = await cli(cluster, "describe", "-w", f"missing-{tag}")
    assert missing.exit_code == 3 and "was not found" in missing.output
    bad_query = await cli(cluster, "list", "-q", "WorkflowTyp = 'x'")
    assert bad_query.exit_code == 2 and "did you mean WorkflowType?" in bad_query.output
    bad_json = await cli(cluster, "start", "-t", "T", "--tq", "q", "-w", "w", "-i", "not json")
    assert bad_json.exit_code == 2 and "is not JSON" in bad_json.output
    assert (await cli(cluster, "describe")).exit_code == 2  # --workflow-id missing
    unreachable = await asyncio.to_thread(CliRunner().invoke, workflow_group,
                                          ["count", "--address", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 4 and "cannot reach the frontend" in unreachable.output
    # Waiting for a result is no reason to retry an address where nothing listens, nor a
    # workflow that does not exist.
    no_frontend = await asyncio.to_thread(CliRunner().invoke, workflow_group,
                                          ["result", "-w", f"slow-{tag}", "--timeout", "5",
                                           "--address", "http://127.0.0.1:9"])
    assert no_frontend.exit_code == 4 and "cannot reach the frontend" in no_frontend.output
    no_workflow = await cli(cluster, "result", "-w", f"missing-{tag}", "--timeout", "5")
    assert no_workflow.exit_code == 3 and "was not found" in no_workflow.output
    running = await cli(cluster, "start", "-t", "CliGreet", "--tq", f"nobody-{tag}", "-w", f"slow-{tag}",
                        "-i", '"x"', "-i", "true")
    ok(running)
    still = await cli(cluster, "result", "-w", f"slow-{tag}", "--timeout", "0.5")
    assert still.exit_code == 1 and "still running" in still.output
    # No worker polls its queue: the query times out (504), "no answer" like an unreachable frontend,
    # after the --timeout asked (1 s), not the server's default 10 s.
    loop = asyncio.get_running_loop()
    asked = loop.time()
    unanswered = await cli(cluster, "query", "-w", f"slow-{tag}", "--name", "current", "--timeout", "1")
    assert unanswered.exit_code == 4 and "no worker" in unanswered.output, unanswered.output
    assert 1 <= loop.time() - asked < 8


def test_kadence_workflow_is_mounted_on_the_kadence_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert kadence_main(["workflow", "--help"]) == 0
    assert "Find, inspect and drive workflows" in capsys.readouterr().out
    assert kadence_main(["workflow", "nonsense"]) == 2


async def test_list_and_describe_show_the_memo(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    queue = f"cli-memo-{tag}"
    handle = await client.start_workflow(CliGreet.run, "Ada", True, id=f"memo-{tag}", task_queue=queue,
                                         memo={"owner": "ops", "ticket": 42})
    mine = f"TaskQueue = '{queue}'"

    async def listed() -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(ok(await cli(cluster, "list", "-q", mine, "-o", "json")))
        return runs if runs and runs[0].get("memo") else []
    [run] = await eventually(listed, timeout=30, what="the run listed with its memo")
    assert run["memo"] == {"owner": "ops", "ticket": 42}
    table = ok(await cli(cluster, "list", "-q", mine))
    assert "Memo" in table and 'owner="ops", ticket=42' in table
    described = ok(await cli(cluster, "describe", "-w", f"memo-{tag}"))
    assert 'owner="ops", ticket=42' in described
    await handle.terminate("done")


async def test_start_with_a_cron_schedule_creates_its_schedule(client: Client, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    out = json.loads(ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", f"cron-{tag}", "-w", f"nightly-{tag}",
                                  "-i", '"Ada"', "-i", "false", "--cron-schedule", "0 2 * * *", "-o", "json")))
    assert out == {"workflow_id": f"nightly-{tag}", "run_id": None, "schedule_id": f"cron-nightly-{tag}"}
    schedule = await client.describe_schedule(f"cron-nightly-{tag}")
    assert schedule["spec"]["cron"] == "0 2 * * *" and schedule["action"]["workflow_id"] == f"nightly-{tag}"
    table = ok(await cli(cluster, "start", "-t", "CliGreet", "--tq", f"cron-{tag}", "-w", f"nightly-{tag}",
                         "-i", '"Ada"', "-i", "false", "--cron-schedule", "0 2 * * *"))
    assert f"cron-nightly-{tag}" in table  # the same again: answered the same
    await client.delete_schedule(f"cron-nightly-{tag}")


async def test_the_connection_and_output_options_go_before_or_after_the_subcommand(cluster: Cluster) -> None:
    # As `kadence namespace` and `kadence schedule`: `kadence workflow -n shop list` as well as
    # `kadence workflow list -n shop`; written in both places, the one after the subcommand wins.
    tag = uuid.uuid4().hex[:6]
    for args in (["-n", f"nosuch-{tag}", "count"], ["count", "-n", f"nosuch-{tag}"],
                 ["--namespace", f"nosuch-{tag}", "-o", "json", "list"]):
        missing = await cli(cluster, *args)
        assert missing.exit_code == 3 and f"nosuch-{tag}" in missing.output, (args, missing.output)
    for args in (["-o", "json", "-n", "default", "count"], ["count", "-o", "json"],
                 ["-n", f"nosuch-{tag}", "-o", "table", "count", "-n", "default", "-o", "json"]):
        assert "count" in json.loads(ok(await cli(cluster, *args))), args
    # Given before the subcommand, --address wins over KADENCE_ADDRESS too.
    unreachable = await cli(cluster, "--address", "http://127.0.0.1:9", "count")
    assert unreachable.exit_code == 4 and "http://127.0.0.1:9" in unreachable.output
    # Through the `kadence` command, as the README writes it.
    assert await asyncio.to_thread(kadence_main, ["workflow", "--address", cluster.url, "-n", f"nosuch-{tag}",
                                                  "list"]) == 3
