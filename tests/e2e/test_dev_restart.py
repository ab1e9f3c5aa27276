"""`kadence dev` stopped and started again: running workflows carry on from PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from kadence import Client, Worker
from tests.helpers import dev_command, eventually, start_dev, stop_dev

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, TimerWorkflow

pytestmark = pytest.mark.timeout(180)


async def test_restart_loses_nothing(tmp_path: Path) -> None:
    dev = await start_dev(tmp_path / "data", tmp_path / "dev-1.log")
    proc = dev.process
    try:
        client = await Client.connect(dev.url)
        approval = f"approval-{uuid.uuid4().hex[:6]}"
        timer = f"timer-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue="q-restart", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            waiting = await client.start_workflow(ApprovalWorkflow.run, id=approval, task_queue="q-restart")
            sleeping = await client.start_workflow(TimerWorkflow.run, 4.0, id=timer, task_queue="q-restart")
            async def first_tasks_run() -> bool:
                kinds = [[e["event_type"] for e in await h.history()] for h in (waiting, sleeping)]
                return "WorkflowTaskCompleted" in kinds[0] and "TimerStarted" in kinds[1]
            await eventually(first_tasks_run, what="both runs past their first workflow task")
        await client.close()

        stop_dev(proc)
        assert proc.returncode == 0, dev.log.read_text()[-2000:]
        # The data directory keeps its shard count: another one is refused, none given reuses it.
        refused = await asyncio.create_subprocess_exec(
            *dev_command(tmp_path / "data", shards=2), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 2
        assert b"was created with --shards 3" in err
        dev = await start_dev(tmp_path / "data", tmp_path / "dev-2.log", shards=None)
        proc = dev.process
        probe = AIOKafkaProducer(bootstrap_servers=dev.kafka)
        await probe.start()
        try:
            assert await probe.partitions_for("kadence.requests") == {0, 1, 2}
        finally:
            await probe.stop()

        client = await Client.connect(dev.url)
        async with Worker(client, task_queue="q-restart", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            waiting = client.get_workflow_handle(approval)
            assert (await waiting.describe())["status"] == "Running"
            await waiting.signal(ApprovalWorkflow.approve, "after restart")
            assert await asyncio.wait_for(waiting.result(), 60) == "approved by after restart"
            assert await asyncio.wait_for(client.get_workflow_handle(timer).result(), 60) >= 4.0
        await client.close()
    finally:
        stop_dev(proc)


async def test_sigkill_then_restart(tmp_path: Path) -> None:
    dev = await start_dev(tmp_path / "data", tmp_path / "dev-1.log")
    proc = dev.process
    try:
        client = await Client.connect(dev.url)
        wid = f"approval-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue="q-kill", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handle = await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="q-kill")
            async def first_task_run() -> bool:
                return "WorkflowTaskCompleted" in [e["event_type"] for e in await handle.history()]
            await eventually(first_task_run, what="the first workflow task completed")
        await client.close()

        proc.send_signal(signal.SIGKILL)  # no shutdown at all
        proc.wait(timeout=10)
        # Same ports again (named, as the test is about them): the killed process's broker died with it.
        dev = await start_dev(tmp_path / "data", tmp_path / "dev-2.log", port=dev.port, kafka_port=dev.kafka_port)
        proc = dev.process

        client = await Client.connect(dev.url)
        async with Worker(client, task_queue="q-kill", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handle = client.get_workflow_handle(wid)
            await handle.signal(ApprovalWorkflow.approve, "survivor")
            assert await asyncio.wait_for(handle.result(), 60) == "approved by survivor"
        await client.close()
    finally:
        stop_dev(proc)
