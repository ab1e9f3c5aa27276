"""A terminated run keeps the reason it was terminated with: the client's result raises
WorkflowFailureError whose TerminatedError carries it, describe answers it, and ``kadence
workflow describe`` shows it."""

from __future__ import annotations

import json
import uuid

import pytest

from kadence import Client
from kadence.exceptions import TerminatedError, WorkflowFailureError
from services.cluster import Cluster

from .test_workflow_cli import cli, ok

pytestmark = pytest.mark.timeout(60)


async def test_the_terminate_reason_reaches_the_result_describe_and_the_cli(client: Client,
                                                                           cluster: Cluster) -> None:
    wid = f"stopped-{uuid.uuid4().hex[:8]}"
    reason = "operator: stuck on a bad order (ticket 42)"
    handle = await client.start_workflow("NobodyRunsThis", id=wid, task_queue=f"none-{wid}")
    assert (await handle.describe())["terminate_reason"] is None
    await handle.terminate(reason)

    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result(timeout=20)
    assert caught.value.status == "Terminated"
    assert isinstance(caught.value.cause, TerminatedError) and caught.value.cause.reason == reason
    assert reason in str(caught.value.cause)
    assert (await handle.describe())["terminate_reason"] == reason
    assert json.loads(ok(await cli(cluster, "describe", "-w", wid, "-o", "json")))["terminate_reason"] == reason
    assert reason in ok(await cli(cluster, "describe", "-w", wid))
