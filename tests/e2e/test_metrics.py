"""Metrics through OpenTelemetry, scraped from the Prometheus endpoint after a workflow completes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from kadence import Client, Worker
from services.common import telemetry
from tests.helpers import eventually

from .test_tracing import TracedWorkflow, traced_greeting

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def metrics_url() -> Iterator[str]:
    """Autouse, so the meter provider is installed before the cluster fixture starts the services."""
    signals = telemetry.setup_from_env("kadence-test", traces="none", metrics_port=0)
    assert signals.metrics_url is not None and signals.metrics_url.startswith("http://127.0.0.1:")
    try:
        yield signals.metrics_url
    finally:
        signals.shutdown()


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (summed when several match)."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    assert found, f"no sample {name}{labels} in:\n{text}"
    return total


async def test_prometheus_endpoint_counts_a_workflow(client: Client, metrics_url: str) -> None:
    wid = f"metered-{uuid.uuid4().hex[:8]}"
    kind = {"kadence_workflow_type": "TracedWorkflow", "kadence_namespace": "default"}
    async with Worker(client, task_queue="q-metered", workflows=[TracedWorkflow], activities=[traced_greeting]):
        assert await client.execute_workflow(TracedWorkflow.run, "m", id=wid, task_queue="q-metered") == "Hello, m!"

        async def scrape() -> str:
            async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
                assert resp.status == 200
                text = await resp.text()
            # The result may reach the client (PostgreSQL's notification of the commit) before
            # history's post-commit step has counted the completion.
            assert _value(text, "kadence_workflows_completed_total", **kind) == 1
            return text

        text = await eventually(scrape, what="the completion counted")

    assert _value(text, "kadence_workflows_started_total", **kind) == 1
    # The first workflow task and the activity task were handed out; the second workflow
    # task ran ahead on the worker that completed the activity, and was never handed out.
    assert _value(text, "kadence_task_schedule_to_start_seconds_count", kadence_task_queue="q-metered") == 2
    assert _value(text, "kadence_history_batch_size_count") >= 1
    assert _value(text, "kadence_history_shard_lag") >= 0
    assert _value(text, "kadence_history_outbox_backlog") >= 0
    # The worker's pollers are waiting right now (two per kind by default).
    assert _value(text, "kadence_polls_waiting", kadence_task_kind="activity") >= 1
    # The frontend's read shares (decision 0020): its slots are shown whether or not in use.
    for share in ("history_reads", "result_reads", "lookup_reads", "all_reads"):
        assert _value(text, "kadence_frontend_reads_in_use", kadence_read_share=share) >= 0
        assert _value(text, "kadence_frontend_reads_waiting", kadence_read_share=share) >= 0
