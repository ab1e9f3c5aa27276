"""What the run page shows beyond the API: the Kafka record that started the run and, with
KADENCE_TRACE_UI_URL set and tracing on, a link to its trace; the hash-chain check of a run."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kadence import Client, Worker, activity, workflow
from kadence_protocol import avro
from services.cluster import Cluster
from tests.tracing import in_memory_spans

pytestmark = pytest.mark.timeout(60)


@activity.defn
async def noted(value: str) -> str:
    return value


@workflow.defn
class NotedWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(noted, value, start_to_close_timeout=timedelta(seconds=10))


@pytest.fixture(autouse=True)
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Autouse, so tracing and the trace UI address are set before the cluster starts."""
    monkeypatch.setenv("KADENCE_TRACE_UI_URL", "http://traces.example/trace/{trace_id}")
    with in_memory_spans() as exporter:
        yield exporter


async def test_the_run_page_links_the_start_record_to_its_trace(cluster: Cluster, client: Client,
                                                                spans: InMemorySpanExporter) -> None:
    wid = f"traced-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="ui-traced", workflows=[NotedWorkflow], activities=[noted]):
        assert await client.execute_workflow(NotedWorkflow.run, "x", id=wid, task_queue="ui-traced") == "x"
    async with aiohttp.ClientSession() as http, \
            http.get(f"{cluster.url}/ui/namespaces/default/workflows/{wid}") as answer:
        html = await answer.text()
    assert answer.status == 200
    assert re.search(r'id="start-record">kadence\.requests\[\d+\]@\d+<', html), html
    link = re.search(r'href="http://traces\.example/trace/([0-9a-f]{32})"', html)
    assert link is not None, "no trace link on the run page"
    assert link.group(1) in {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()}


async def test_the_hash_chain_check_of_one_run_holds_and_finds_an_altered_event(cluster: Cluster,
                                                                               client: Client) -> None:
    wid = f"chained-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue="ui-chained", workflows=[NotedWorkflow], activities=[noted]):
        assert await client.execute_workflow(NotedWorkflow.run, "x", id=wid, task_queue="ui-chained") == "x"
    page = f"{cluster.url}/ui/namespaces/default/workflows/{wid}?verify=chain"
    async with aiohttp.ClientSession() as http:
        async with http.get(page) as answer:
            html = await answer.text()
        assert re.search(r"The hash chain of the \d+ events holds", html), html
        # Someone edits a stored event in place, keeping its hash: the check names that event.
        run_id = (await client.get_workflow_handle(wid).describe())["run_id"]
        data = await cluster.pool.fetchval("SELECT data FROM history_events WHERE run_id = $1 AND event_id = 3",
                                           run_id)
        _, event = avro.decode(bytes(data))
        altered = avro.encode("HistoryEvent", {**event, "event_time": event["event_time"] + 1})
        await cluster.pool.execute("UPDATE history_events SET data = $1 WHERE run_id = $2 AND event_id = 3",
                                   altered, run_id)
        async with http.get(page) as answer:
            html = await answer.text()
        assert "The hash chain breaks at event 3" in html
