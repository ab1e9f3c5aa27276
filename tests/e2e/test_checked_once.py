"""In one process (``kadence dev``) history does not check again the commands its frontend
checked and handed over (docs/colocation.md, "A handed command is checked once"); between
processes (KADENCE_COLOCATE=0) it checks every command it fetches."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from kadence import Client, Worker
from services.cluster import Cluster
from services.common import validation
from services.history import runner as runner_module

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(either_path_cluster: Cluster) -> Cluster:
    return either_path_cluster  # every test here runs on both paths (conftest.py)


async def test_history_checks_only_what_its_frontend_did_not(cluster: Cluster,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = validation.check_command

    def check(name: str, cmd: dict[str, Any], limits: validation.Limits) -> None:
        checked.append(name)
        real(name, cmd, limits)

    # History's check only (the frontend calls the same function of the same module).
    monkeypatch.setattr(runner_module, "validation", SimpleNamespace(check_command=check, Invalid=validation.Invalid))
    client = await Client.connect(cluster.url, namespace="default")
    try:
        async with Worker(client, task_queue="q-checked", workflows=[EchoWorkflow], activities=[echo]):
            # The first: history's consumer may fetch it before the fetch gate pauses the
            # partition (the gate starts with the first command handed over).
            await client.execute_workflow(EchoWorkflow.run, "hi", id=f"checked-{uuid.uuid4().hex[:8]}",
                                          task_queue="q-checked")
            checked.clear()
            for _ in range(3):
                result = await client.execute_workflow(EchoWorkflow.run, "hi", id=f"checked-{uuid.uuid4().hex[:8]}",
                                                       task_queue="q-checked")
                assert result == "hi"
    finally:
        await client.close()
    if cluster.settings.colocate:
        assert checked == []
    else:
        assert checked.count("StartWorkflowExecution") == 3
