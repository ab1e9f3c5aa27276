"""The web UI's Reset action in headless Chromium (as test_web_ui.py): reset a waiting run to
its first workflow task through the confirmation step, land on the new run's page with
its link back, and reset a closed run too. Skipped where Chromium or Playwright is missing."""

from __future__ import annotations

from typing import Any

from kadence import Client, Worker
from services.cluster import Cluster
from tests.helpers import eventually

from . import test_web_ui as ui
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow

pytestmark = ui.pytestmark
browser = ui.browser  # the fixture: a headless Chromium


async def _kinds(client: Client, wid: str) -> list[str]:
    return [e["event_type"] for e in await client.get_workflow_handle(wid).history()]


async def test_reset_from_the_run_page_goes_to_the_new_run(cluster: Cluster, client: Client, browser: Any) -> None:
    wid = ui._id("approval-reset")
    async with Worker(client, task_queue="ui-reset", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        old = await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="ui-reset")
        await eventually(lambda: _first_task_done(client, wid), timeout=20, what="the first workflow task")
        page = await browser.new_page()
        await page.goto(f"{cluster.url}/ui/namespaces/default/workflows/{wid}")
        await page.select_option("#action-reset select[name=reset_point]", "first")
        await page.fill("#action-reset input[name=reason]", "bad deploy")
        await page.click("#action-reset button")
        await page.click("#confirm-yes")
        # The page of the new run, which names the run it was reset from.
        await page.locator("#reset-from", has_text=str(old.run_id)).wait_for()
        new_run = page.url.split("run_id=", 1)[1]
        assert new_run and new_run != old.run_id
        assert (await client.get_workflow_handle(wid, run_id=old.run_id).describe())["status"] == "Terminated"
        await client.get_workflow_handle(wid).signal(ApprovalWorkflow.approve, "ops")
        assert await client.get_workflow_handle(wid, run_id=new_run).result(timeout=30) == "approved by ops"

        # A closed run can be reset too: the form is there; a bad event id says why.
        await page.goto(f"{cluster.url}/ui/namespaces/default/workflows/{wid}?run_id={new_run}")
        await page.locator("#run-status", has_text="Completed").wait_for()
        await page.select_option("#action-reset select[name=reset_point]", "")
        await page.fill("#action-reset input[name=event_id]", "1")
        await page.click("#action-reset button")
        await page.click("#confirm-yes")
        await page.locator("#action-reset .result", has_text="InvalidResetPoint").wait_for()
        # The old run's page lists the run reset from it.
        await page.goto(f"{cluster.url}/ui/namespaces/default/workflows/{wid}?run_id={old.run_id}")
        assert new_run in (await page.text_content("#reset-to") or "")


async def _first_task_done(client: Client, wid: str) -> bool:
    return "WorkflowTaskCompleted" in await _kinds(client, wid)
