"""The web UI in a real headless Chromium (Debian's package, driven by Playwright): start a
cluster, run workflows, and click through as an operator would. Screenshots of the main
pages are saved as artifacts under the test run's temporary directory, or in the folder
KADENCE_SCREENSHOTS names (KADENCE_SCREENSHOTS=docs/screenshots refreshes the ones the
README shows).

Skipped, saying why, where /usr/bin/chromium or Playwright is missing; `.ci/run` installs both.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from kadence import Client, RetryPolicy, Worker, activity, workflow
from kadence.exceptions import WorkflowFailureError
from services.cluster import Cluster
from services.common import dlq
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend.auth import api_key_entry
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, EchoWorkflow

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("KADENCE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "kadence-ui-screenshots")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright (the test extra) is not installed")
pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: `apt-get install chromium` (.ci/run does)"),
]


@activity.defn
async def charge_card(order: str) -> str:
    raise ValueError(f"card declined for {order}")


@workflow.defn
class OrderWorkflow:
    """Fails for good: its activity may run once."""

    @workflow.run
    async def run(self, order: str) -> str:
        return await workflow.execute_activity(charge_card, order, start_to_close_timeout=timedelta(seconds=5),
                                               retry_policy=RetryPolicy(maximum_attempts=1))


@workflow.defn
class StuckOrderWorkflow:
    """Stuck: its activity fails and is retried forever, the kind of run an operator opens."""

    @workflow.run
    async def run(self, order: str) -> str:
        return await workflow.execute_activity(
            charge_card, order, start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0))


WORKFLOWS = [*ALL_WORKFLOWS, OrderWorkflow, StuckOrderWorkflow]
ACTIVITIES = [*ALL_ACTIVITIES, charge_card]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory(prefix="kadence-ui-chromium-") as profile:
        async with playwright_api.async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=ARGS, headless=True,
                viewport={"width": 1400, "height": 900})
            try:
                yield context
            finally:
                await context.close()


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    # A fixed identity: the screenshots show the worker's, and should not show a host name.
    c = await Client.connect(cluster.url, namespace="default", identity="worker-1")
    try:
        yield c
    finally:
        await c.close()


async def test_an_operator_finds_why_runs_failed_terminates_one_and_redrives_a_dead_letter(
        cluster: Cluster, client: Client, broker: EmbeddedBroker, browser: Any) -> None:
    failed, stuck, waiting = _id("order-failed"), _id("order-stuck"), _id("approval")
    async with Worker(client, task_queue="ui-q", workflows=WORKFLOWS, activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(OrderWorkflow.run, "A-17", id=failed, task_queue="ui-q")
        await client.start_workflow(StuckOrderWorkflow.run, "B-42", id=stuck, task_queue="ui-q")
        await client.start_workflow(ApprovalWorkflow.run, id=waiting, task_queue="ui-q")
        await eventually(lambda: _attempts(client, stuck, 2), timeout=20, what="the stuck activity retried")

        page = await browser.new_page()
        base = cluster.url
        await page.goto(base + "/")
        assert page.url.endswith("/ui/namespaces/default/workflows")
        if await page.locator("#no-visibility").count():
            # No visibility on this frontend: the page says so, and a run opens by its id.
            await page.fill("#workflow-id", failed)
            await page.click("#open-by-id button")
        else:
            await page.fill("input[name=query]", "ExecutionStatus = 'Failed'")
            await page.click("#search button")
            await page.click(f"text={failed}")
        await page.wait_for_selector("#run-status")
        assert await page.text_content("#run-status") == "Failed"
        assert "card declined for A-17" in (await page.text_content("#outcome") or "")
        assert await page.locator("#timeline .bar-failed").count() >= 1
        assert "kadence.requests[" in (await page.text_content("#start-record") or "")
        await _shot(page, "workflow-failed")

        # The stuck run: its pending activity shows the attempt and the last failure.
        await page.goto(f"{base}/ui/namespaces/default/workflows/{stuck}")
        row = page.locator("#pending-activities tbody tr").first
        assert "card declined for B-42" in (await row.text_content() or "")
        assert "keeps failing and is being retried" in (await page.text_content("#hints") or "")
        await _shot(page, "workflow-stuck")

        # Terminate the waiting run, through the confirmation step.
        await page.goto(f"{base}/ui/namespaces/default/workflows/{waiting}")
        await page.fill("#action-terminate input[name=reason]", "not needed")
        await page.click("#action-terminate button")
        await page.click("#confirm-yes")
        await page.locator("#run-status", has_text="Terminated").wait_for()  # the page reloads after the action
        assert (await client.get_workflow_handle(waiting).describe())["status"] == "Terminated"

        await page.goto(f"{base}/ui/namespaces/default/workflows")
        await _shot(page, "workflows")

        # A task queue no worker polls: its backlog shows on the task queues page.
        await client.start_workflow(EchoWorkflow.run, "hi", id=_id("nobody"), task_queue="ui-nobody")

        async def backlog_shown() -> bool:
            await page.goto(f"{base}/ui/namespaces/default/task-queues")
            return "ui-nobody" in (await page.text_content("main") or "")

        await eventually(backlog_shown, timeout=20, what="the backlog of ui-nobody is shown")
        await _shot(page, "task-queues")

    # A dead letter: bytes no schema decodes, produced straight to kadence.requests.
    key = f"default/{_id('garbage')}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("kadence.requests", b"\x00not avro", key=key)
    finally:
        await producer.stop()
    await eventually(lambda: _letters(broker, key, 1), timeout=20, what="the record was dead-lettered")
    await page.goto(f"{base}/ui/dlq")
    row = page.locator("#dead-letters tbody tr", has_text=key.decode())
    assert "kadence.requests" in (await row.text_content() or "")
    await _shot(page, "dead-letters")
    await row.locator("button").click()
    await page.click("#confirm-yes")
    await page.wait_for_selector("#dead-letters .result:has-text('Re-driven.')")
    # The re-driven bytes are still garbage: they come back as a second dead letter.
    await eventually(lambda: _letters(broker, key, 2), timeout=20, what="the re-driven record came back")


async def _attempts(client: Client, workflow_id: str, at_least: int) -> bool:
    pending = (await client.get_workflow_handle(workflow_id).describe())["pending_activities"]
    return bool(pending) and pending[0]["attempt"] >= at_least and bool(pending[0].get("last_failure"))


async def _letters(broker: EmbeddedBroker, key: bytes, count: int) -> bool:
    return len([e for e in await dlq.list_dead_letters(broker.bootstrap) if e.key == key]) >= count


async def test_user_strings_are_escaped_and_pages_carry_a_strict_csp(cluster: Cluster, client: Client,
                                                                     browser: Any) -> None:
    wid = "<img src=x onerror=document.title='pwned'><script>document.title='pwned'</script>" + _id("x")
    async with Worker(client, task_queue="ui-xss", workflows=WORKFLOWS, activities=ACTIVITIES):
        await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="ui-xss")
        page = await browser.new_page()
        await page.goto(f"{cluster.url}/ui/?workflow_id={_quote(wid)}")
        await page.wait_for_selector("#workflow-id")
        assert await page.text_content("#workflow-id") == wid  # shown as text, not run
        assert await page.title() != "pwned"
        assert await page.locator("main img").count() == 0
        await page.fill("#action-query input[name=query_type]", "status")
        await page.click("#action-query button")
        await page.locator("#action-query .result", has_text='"waiting"').wait_for()
        await page.fill("#action-signal input[name=signal_name]", "approve")
        await page.fill("#action-signal input[name=input]", '["<b>ops</b>"]')
        await page.click("#action-signal button")
        await page.click("#confirm-yes")
        assert await client.get_workflow_handle(wid).result(timeout=20) == "approved by <b>ops</b>"

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/ui/namespaces/default/workflows") as answer:
            csp = answer.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in csp and "script-src 'self'" in csp
        # A cross-site form can neither set the custom header nor send JSON: refused.
        async with http.post(f"{cluster.url}/ui/api/namespaces/default/workflows/x/terminate",
                             data={"reason": "csrf"}) as answer:
            assert answer.status == 403


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@pytest.fixture
async def secured(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"api_keys": [
        api_key_entry("ops", "ops-key", [{"namespace": "*", "permissions": ["admin"]}]),
        api_key_entry("viewer", "viewer-key", [{"namespace": "default", "permissions": ["read"]}]),
        api_key_entry("shopper", "shop-key", [{"namespace": "shop", "permissions": ["read"]}]),
        api_key_entry("nobody", "nobody-key", []),
    ]}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, auth_config=str(config))
    async with Cluster(settings) as c:
        yield c


async def test_with_auth_the_ui_signs_in_and_acts_with_the_callers_permissions(secured: Cluster,
                                                                                browser: Any) -> None:
    wid = _id("secured")
    ops = await Client.connect(secured.url, namespace="default", identity="worker-1", api_key="ops-key")
    try:
        await ops.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="ui-secured")
        page = await browser.new_page()
        await page.goto(f"{secured.url}/ui/namespaces/default/workflows/{wid}")
        assert "/ui/login?next=" in page.url
        await page.fill("#credential", "guessed")
        await page.click("#login-form button")
        await page.locator("#login-form .result", has_text="Unauthenticated").wait_for()
        await page.fill("#credential", "viewer-key")
        await page.click("#login-form button")
        await page.wait_for_selector("#run-status")  # back on the page asked for
        assert page.url.endswith(f"/workflows/{wid}")
        # Reading is granted, terminating is not: the API's answer shows next to the button.
        await page.click("#action-terminate button")
        await page.click("#confirm-yes")
        await page.locator("#action-terminate .result", has_text="PermissionDenied").wait_for()
        await page.goto(f"{secured.url}/ui/dlq")
        assert "lacks the admin permission" in (await page.text_content("#error-message") or "")
        # Sign out, then in as ops: the terminate goes through.
        await page.goto(f"{secured.url}/ui/namespaces/default/workflows/{wid}")
        await page.click("header form.js-action button")
        await page.wait_for_url("**/ui/login")
        await page.goto(f"{secured.url}/ui/login?next=/ui/namespaces/default/workflows/{wid}")
        await page.fill("#credential", "ops-key")
        await page.click("#login-form button")
        await page.wait_for_selector("#action-terminate")
        await page.click("#action-terminate button")
        await page.click("#confirm-yes")
        await page.locator("#run-status", has_text="Terminated").wait_for()
        cookies = [c for c in await browser.cookies() if c["name"] == "kadence_ui_credential"]
        assert cookies and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    finally:
        await ops.close()


async def test_signing_in_without_a_next_page_lands_where_the_caller_may_read(secured: Cluster,
                                                                               browser: Any) -> None:
    ops = await Client.connect(secured.url, namespace="default", identity="ops", api_key="ops-key")
    try:
        await ops.create_namespace("shop", retention=timedelta(days=1))
    finally:
        await ops.close()
    page = await browser.new_page()
    # A grant in `shop` only: not the `default` namespace's 403, but shop's workflows.
    await page.goto(f"{secured.url}/ui/login")
    await page.fill("#credential", "shop-key")
    await page.click("#login-form button")
    await page.wait_for_url("**/ui/namespaces/shop/workflows")
    # Asked for `default` anyway: the 403 links to shop's workflows, not back to itself.
    await page.goto(f"{secured.url}/ui/namespaces/default/workflows")
    assert "lacks the read permission" in (await page.text_content("#error-message") or "")
    assert await page.get_attribute("#error-back", "href") == "/ui/namespaces/shop/workflows"
    await page.click("#error-back")
    await page.wait_for_url("**/ui/namespaces/shop/workflows")
    # No grant anywhere: a page that says so and offers to sign in again, no link to itself.
    await page.click("header form.js-action button")
    await page.wait_for_url("**/ui/login")
    await page.fill("#credential", "nobody-key")
    await page.click("#login-form button")
    await page.locator("#error-message", has_text="grant reading no namespace").wait_for()
    assert await page.get_attribute("#error-back", "href") == "/ui/login"
