"""The operator pages added beside the run page, in a real headless Chromium: the stack
trace of a waiting run (and what the page says when no worker answers), a task queue's
pollers, and the audit page with a run's divergences and its hash-chain check.

Skipped, saying why, where /usr/bin/chromium or Playwright is missing (see test_web_ui.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from kadence import Client, Worker, workflow
from kadence_protocol import avro
from services.cluster import Cluster

from .test_audit import _published
from .test_audit_status import _cli
from .test_web_ui import CHROMIUM, _id, _shot, browser
from .workflows import EchoWorkflow, echo

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright (the test extra) is not installed")
pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: `apt-get install chromium` (.ci/run does)"),
]
__all__ = ["browser"]  # the fixture, shared with test_web_ui.py

WAIT_LINE = "await workflow.wait_condition(lambda: self.approved)  # the operator should see this line"


@workflow.defn(name="UiParked")
class UiParked:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.approved)  # the operator should see this line
        return "approved"

    @workflow.signal
    def approve(self) -> None:
        self.approved = True


# Reads "invoice-7exe.jpg" where U+202E is shown as it is.
DISGUISED = "invoice-7\u202egpj.exe"


@workflow.defn(name="UiDisguised")
class UiDisguised:
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: False)
        return ""

    @workflow.query
    def label(self) -> str:
        return DISGUISED

    @workflow.query
    def broken(self) -> str:
        raise ValueError(f"no label for {DISGUISED}")


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    c = await Client.connect(cluster.url, namespace="default", identity="worker-ops")
    try:
        yield c
    finally:
        await c.close()


async def test_stack_trace_task_queue_and_audit_pages(cluster: Cluster, client: Client, browser: Any) -> None:
    parked, done = _id("parked"), _id("echoed")
    base = cluster.url
    page = await browser.new_page()
    async with Worker(client, task_queue="ui-ops", workflows=[UiParked, EchoWorkflow], activities=[echo]):
        assert await client.execute_workflow(EchoWorkflow.run, "x", id=done, task_queue="ui-ops") == "x"
        await client.start_workflow(UiParked.run, id=parked, task_queue="ui-ops")

        await page.goto(f"{base}/ui/namespaces/default/workflows/{parked}")
        await page.click("#stack-trace button")
        await page.locator("#stack-trace-text", has_text=WAIT_LINE).wait_for()
        assert "Task workflow.run:" in (await page.text_content("#stack-trace-text") or "")
        await _shot(page, "stack-trace")

        await page.goto(f"{base}/ui/namespaces/default/task-queues")
        await page.click("#task-queues a:text-is('ui-ops')")
        await page.locator("#kind-workflow .pollers", has_text="worker-ops").wait_for()
        await page.locator("#kind-activity .pollers", has_text="worker-ops").wait_for()
        await _shot(page, "task-queue")

    # The worker is gone: the button says what that means instead of a bare error.
    await page.goto(f"{base}/ui/namespaces/default/workflows/{parked}")
    await page.click("#stack-trace button")
    await page.locator("#stack-trace-text", has_text="No worker answered within 5 s").wait_for(timeout=20_000)
    assert "task queue ui-ops" in (await page.text_content("#stack-trace-text") or "")

    # An audit, then an event altered in place and another audit: the audit page shows it.
    await _published(cluster)
    bootstrap, dsn = cluster.settings.kafka_bootstrap, cluster.settings.database_url
    assert (await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn)).returncode == 0
    conn = await asyncpg.connect(dsn)
    try:
        run_id = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", done)
        row = await conn.fetchval("SELECT data FROM history_events WHERE run_id = $1 AND event_id = 5", run_id)
        event = avro.decode(row)[1]
        event["attributes"]["input"] = '["forged"]'
        await conn.execute("UPDATE history_events SET data = $1 WHERE run_id = $2 AND event_id = 5",
                           avro.encode("HistoryEvent", event), run_id)
    finally:
        await conn.close()
    assert (await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn)).returncode == 1

    await page.goto(f"{base}/ui/namespaces/default/workflows")
    await page.click("header a:text-is('Audit')")
    assert "1 hash-chain break(s)" in (await page.text_content("#chain-verdict") or "")
    assert await page.locator("#verifications tbody tr").count() == 1  # the clean one, before
    await _shot(page, "audit")
    await page.click(f"#divergences a:text-is('{done}')")
    await page.locator("#audit-verdict", has_text="found 2 divergence(s) in this run").wait_for()
    await page.click("#chain a")
    await page.locator("#chain-result", has_text="The hash chain breaks at event 5").wait_for()


async def test_a_bidi_override_in_an_id_and_a_query_answer_is_shown_as_its_escape(
        cluster: Cluster, client: Client, browser: Any) -> None:
    """What the browser renders, not the HTML: the run's id in its page and the answer of a
    query the page's script writes both show U+202E as \\u202e, so neither reads backwards."""
    wid = _id("bidi") + "\u202e"
    page = await browser.new_page()
    async with Worker(client, task_queue="ui-bidi", workflows=[UiDisguised]):
        await client.start_workflow(UiDisguised.run, id=wid, task_queue="ui-bidi")
        await page.goto(f"{cluster.url}/ui/namespaces/default/workflows/{quote(wid, safe='')}")
        heading = await page.text_content("#workflow-id") or ""
        assert wid.replace("\u202e", "\\u202e") in heading and "\u202e" not in heading, heading
        await page.fill("#action-query input[name=query_type]", "label")
        await page.click("#action-query button")
        shown = page.locator("#action-query .result")
        await shown.filter(has_text="gpj.exe").wait_for()
        answer = await shown.text_content() or ""
        assert "invoice-7\\u202egpj.exe" in answer and "\u202e" not in answer, answer
        # An error message the script writes: the query handler's, as it raised it.
        await page.fill("#action-query input[name=query_type]", "broken")
        await page.click("#action-query button")
        await shown.filter(has_text="QueryFailed").wait_for()
        refused = await shown.text_content() or ""
        assert "no label for invoice-7\\u202egpj.exe" in refused and "\u202e" not in refused, refused
        await client.get_workflow_handle(wid).terminate("done")
