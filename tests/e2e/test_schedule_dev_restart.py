"""A schedule every second with overlap skip keeps firing across a restart of `kadence dev`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadence import Client, Worker
from kadence.exceptions import WorkflowNotFoundError
from tests.helpers import eventually, start_dev, stop_dev

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, EchoWorkflow

pytestmark = pytest.mark.timeout(240)
QUICK = {"KADENCE_SCHEDULER_INTERVAL_MS": "200"}


async def _started(client: Client, at_least: int) -> dict[str, object] | None:
    described = await client.describe_schedule("every-1s")
    n = described["actions_started"]
    assert isinstance(n, int)
    return described if n >= at_least else None


async def _result(client: Client, workflow_id: str) -> object:
    try:
        return await client.get_workflow_handle(workflow_id).result(timeout=5)
    except (WorkflowNotFoundError, TimeoutError):
        return None


async def test_a_skip_schedule_keeps_firing_across_a_restart_of_kadence_dev(tmp_path: Path) -> None:
    # Its scheduler looks five times a second (every second by default), as test_schedules.py's.
    dev = await start_dev(tmp_path / "data", tmp_path / "dev-1.log", env=QUICK)
    proc = dev.process
    try:
        async with await Client.connect(dev.url) as client:
            await client.create_schedule("every-1s", EchoWorkflow.run, "tick", task_queue="q-every",
                                         interval="1s", overlap_policy="skip")
            async with Worker(client, task_queue="q-every", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
                before = await eventually(lambda: _started(client, 2), timeout=60, what="two firings")
        assert before is not None  # eventually returns a truthy value
        n_before = before["actions_started"]
        assert isinstance(n_before, int)
        stop_dev(proc)
        assert proc.returncode == 0, (tmp_path / "dev-1.log").read_text()[-2000:]

        dev = await start_dev(tmp_path / "data", tmp_path / "dev-2.log", shards=None, env=QUICK)
        proc = dev.process
        async with await Client.connect(dev.url) as client:
            async with Worker(client, task_queue="q-every", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
                after = await eventually(lambda: _started(client, n_before + 2), timeout=60,
                                         what="two firings after the restart")
                assert after is not None
                recent = after["recent_actions"]
                assert isinstance(recent, list)
                ids = [a["workflow_id"] for a in recent if a["result"] == "started"]
                assert len(ids) == len(set(ids))  # no firing started twice
                # The newest firing is a run that completes (the worker took it after the restart).
                newest = ids[-1]
                assert await eventually(lambda: _result(client, newest), timeout=30, what="its result") == "tick"
                assert (await client.describe_schedule("every-1s"))["overlap_policy"] == "skip"
    finally:
        stop_dev(proc)
