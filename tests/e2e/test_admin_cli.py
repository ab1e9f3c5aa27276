"""``kadence namespace`` and ``kadence schedule`` against a whole cluster, as a user types them."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner, Result

from kadence._admin_cli import cli
from kadence._cli.workflow import workflow as workflow_cli
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)


async def _kadence(cluster: Cluster, *args: str) -> Result:
    # The CLI runs its own event loop: in a thread, beside the cluster's.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args),
                                   env={"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default"})


async def test_namespaces_and_schedules_from_the_command_line(cluster: Cluster) -> None:
    done = await _kadence(cluster, "namespace", "create", "shop", "--retention", "7d", "--owner-email",
                          "ops@example.com", "--description", "The shop")
    assert done.exit_code == 0, done.output
    assert "Retention     7d" in done.output
    done = await _kadence(cluster, "namespace", "list", "-o", "json")
    assert [n["name"] for n in json.loads(done.output)] == ["default", "shop"]
    done = await _kadence(cluster, "namespace", "update", "shop", "--retention", "12h")
    assert done.exit_code == 0 and "12h" in done.output
    done = await _kadence(cluster, "namespace", "describe", "nowhere")
    assert done.exit_code == 3 and "NamespaceNotFound" in done.output
    done = await _kadence(cluster, "namespace", "update", "shop")
    assert done.exit_code == 2
    done = await _kadence(cluster, "namespace", "update", "shop", "--rps-limit", "2", "--poll-limit", "50")
    assert done.exit_code == 0, done.output
    assert "Rate limit    2/s" in done.output and "Poll limit    50 open" in done.output
    assert "List limit    cluster default" in done.output and "Answer limit  cluster default" in done.output
    done = await _kadence(cluster, "namespace", "update", "shop", "--answer-rps-limit", "300")
    assert done.exit_code == 0 and "Answer limit  300/s" in done.output, done.output
    done = await _kadence(cluster, "namespace", "update", "shop", "--poll-limit", "0.5")
    assert done.exit_code == 2 and "whole number" in done.output
    # Over the rate, a describe waits out the frontend's Retry-After (decision 0019) and gets its answer.
    for _ in range(4):
        done = await asyncio.to_thread(CliRunner().invoke, workflow_cli, ["-n", "shop", "describe", "-w", "nobody"],
                                       env={"KADENCE_ADDRESS": cluster.url})
        assert done.exit_code == 3 and "WorkflowNotFound" in done.output, done.output
    done = await _kadence(cluster, "namespace", "update", "shop", "--rps-limit", "default",
                          "--visibility-rps-limit", "1")
    assert done.exit_code == 0 and "Rate limit    cluster default" in done.output
    # A count is tried once: over the list rate, the CLI says so and ends 4, "worth retrying".
    for _ in range(6):
        done = await asyncio.to_thread(CliRunner().invoke, workflow_cli, ["-n", "shop", "count"],
                                       env={"KADENCE_ADDRESS": cluster.url})
        if done.exit_code != 0:
            break
    assert done.exit_code == 4, done.output
    assert "throttled" in done.output and "'shop'" in done.output and "limit visibility_rps" in done.output
    done = await _kadence(cluster, "namespace", "update", "shop", "--visibility-rps-limit", "default")
    assert done.exit_code == 0 and "List limit    cluster default" in done.output

    done = await _kadence(cluster, "schedule", "-n", "shop", "create", "nightly", "-t", "Report", "-q", "reports",
                          "--cron", "0 2 * * *", "--time-zone", "Europe/Paris", "--input", '["all"]')
    assert done.exit_code == 0, done.output
    assert "cron '0 2 * * *' in Europe/Paris" in done.output
    done = await _kadence(cluster, "schedule", "create", "nightly", "-t", "R", "--tq", "q", "--namespace", "shop",
                          "--interval", "5s")
    assert done.exit_code == 1 and "ScheduleAlreadyExists" in done.output
    # Every run it starts gets the memo and the search attributes; an unregistered attribute is refused.
    done = await _kadence(cluster, "schedule", "create", "memo", "-t", "R", "--tq", "q", "--interval", "1h",
                          "-m", "team=billing", "--memo", 'limits={"max": 3}', "-o", "json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["action"]["memo"] == {"team": "billing", "limits": {"max": 3}}
    done = await _kadence(cluster, "schedule", "create", "tagged", "-t", "R", "--tq", "q", "--interval", "1h",
                          "-a", "NoSuchAttribute=1")
    assert done.exit_code == 2 and "action.search_attributes" in done.output, done.output
    done = await _kadence(cluster, "schedule", "create", "bad", "-t", "R", "--tq", "q", "--interval", "1h",
                          "-m", "no-equals-sign")
    assert done.exit_code == 2 and "NAME=VALUE" in done.output
    done = await _kadence(cluster, "schedule", "create", "both", "-t", "R", "-q", "q", "--cron", "* * * * *",
                          "--interval", "5s")
    assert done.exit_code == 2
    done = await _kadence(cluster, "schedule", "pause", "nightly", "-n", "shop", "--note", "holidays")
    assert done.exit_code == 0 and "paused: holidays" in done.output
    done = await _kadence(cluster, "schedule", "list", "-n", "shop")
    assert "nightly" in done.output and "paused" in done.output
    done = await _kadence(cluster, "schedule", "trigger", "nightly", "-n", "shop")
    assert done.exit_code == 0 and done.output.startswith("nightly-")
    done = await _kadence(cluster, "schedule", "unpause", "nightly", "-n", "shop", "-o", "json")
    assert json.loads(done.output)["paused"] is False
    done = await _kadence(cluster, "schedule", "delete", "nightly", "-n", "shop")
    assert done.exit_code == 0
    done = await _kadence(cluster, "schedule", "describe", "nightly", "-n", "shop")
    assert done.exit_code == 3 and "ScheduleNotFound" in done.output
    done = await _kadence(cluster, "schedule", "list", "-n", "ghost")
    assert done.exit_code == 3 and "NamespaceNotFound" in done.output
