"""A terminate whose answer is lost (the frontend took it, then the connection dropped) is
sent again with its request id: history terminates the run once and answers the repeat ok,
where the client used to fail at once (a terminate carried no request id, so it was not
retried). A second terminate of the closed run is still refused (404). A small proxy between
the client and the real frontend does the losing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from kadence import Client, Worker, workflow
from kadence._http import HttpTransport
from kadence.exceptions import WorkflowNotFoundError
from services.cluster import Cluster
from tests.e2e.losing_proxy import LosingProxy, losing_proxy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


@workflow.defn
class Forever:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[tuple[LosingProxy, str]]:
    async with losing_proxy(str(cluster.url)) as (losing, url):
        losing.lose("POST", "/terminate")
        yield losing, url


async def test_a_terminate_whose_answer_was_lost_is_sent_again_and_applied_once(
        client: Client, proxy: tuple[LosingProxy, str]) -> None:
    losing, url = proxy
    wid = f"term-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="q-term", workflows=[Forever]):
        await client.start_workflow(Forever.run, id=wid, task_queue="q-term")
        async with Client(HttpTransport(url, "default")) as through_proxy:
            handle = through_proxy.get_workflow_handle(wid)
            await handle.terminate("done")  # the lost answer's retry is answered ok
            terminates = losing.calls("POST", "/terminate")
            assert len(terminates) == 2
            assert terminates[0]["request_id"] == terminates[1]["request_id"]
            with pytest.raises(WorkflowNotFoundError, match="no open run to terminate"):
                await handle.terminate("again")  # a new call: the run is closed, as before
    events = [e["event_type"] for e in await client.get_workflow_handle(wid).history()]
    assert events.count("WorkflowExecutionTerminated") == 1
    assert (await client.get_workflow_handle(wid).describe())["status"] == "Terminated"
