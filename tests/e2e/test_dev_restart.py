"""`kadence dev` stopped and started again: running workflows carry on from PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from kadence import Client, Worker
from services.common.embedded import free_port
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, TimerWorkflow

pytestmark = pytest.mark.timeout(180)


def _dev_command(data: Path, port: int, kafka_port: int, shards: int | None) -> list[str]:
    return [sys.executable, "-m", "kadence.cli", "dev", "--data-dir", str(data), "--port", str(port),
            "--kafka-port", str(kafka_port), *(["--shards", str(shards)] if shards is not None else [])]


async def _dev(data: Path, port: int, kafka_port: int, log: Path, shards: int | None = 3,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`kadence dev` started, once it says it runs; ``env``: settings (KADENCE_*) of its own."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _dev_command(data, port, kafka_port, shards),
            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    def running() -> bool:
        if proc.poll() is not None:  # fails at once: an AssertionError would be retried
            pytest.fail(f"kadence dev exited: {log.read_text()[-2000:]}")
        return "Kadence is running" in log.read_text()
    await eventually(running, timeout=30, every=0.1, what="kadence dev up")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_restart_loses_nothing(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev-1.log"
    proc = await _dev(tmp_path / "data", port, kafka_port, log)
    try:
        client = await Client.connect(url)
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

        _stop(proc)
        assert proc.returncode == 0, log.read_text()[-2000:]
        # The data directory keeps its shard count: another one is refused, none given reuses it.
        refused = await asyncio.create_subprocess_exec(
            *_dev_command(tmp_path / "data", port, kafka_port, 2), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 2
        assert b"was created with --shards 3" in err
        log = tmp_path / "dev-2.log"
        proc = await _dev(tmp_path / "data", port, kafka_port, log, shards=None)
        probe = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{kafka_port}")
        await probe.start()
        try:
            assert await probe.partitions_for("kadence.requests") == {0, 1, 2}
        finally:
            await probe.stop()

        client = await Client.connect(url)
        async with Worker(client, task_queue="q-restart", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            waiting = client.get_workflow_handle(approval)
            assert (await waiting.describe())["status"] == "Running"
            await waiting.signal(ApprovalWorkflow.approve, "after restart")
            assert await asyncio.wait_for(waiting.result(), 60) == "approved by after restart"
            assert await asyncio.wait_for(client.get_workflow_handle(timer).result(), 60) >= 4.0
        await client.close()
    finally:
        _stop(proc)


async def test_sigkill_then_restart(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await _dev(tmp_path / "data", port, kafka_port, tmp_path / "dev-1.log")
    try:
        client = await Client.connect(url)
        wid = f"approval-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue="q-kill", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handle = await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="q-kill")
            async def first_task_run() -> bool:
                return "WorkflowTaskCompleted" in [e["event_type"] for e in await handle.history()]
            await eventually(first_task_run, what="the first workflow task completed")
        await client.close()

        proc.send_signal(signal.SIGKILL)  # no shutdown at all
        proc.wait(timeout=10)
        # Same ports again: the killed process's broker died with it.
        proc = await _dev(tmp_path / "data", port, kafka_port, tmp_path / "dev-2.log")

        client = await Client.connect(url)
        async with Worker(client, task_queue="q-kill", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            handle = client.get_workflow_handle(wid)
            await handle.signal(ApprovalWorkflow.approve, "survivor")
            assert await asyncio.wait_for(handle.result(), 60) == "approved by survivor"
        await client.close()
    finally:
        _stop(proc)
