"""Odd identifiers on every way in: whatever id the API takes, the SDK, the CLI and the web
UI name again; what no call could name ('.' and '..', dot segments HTTP clients resolve
away) is refused on every way in, naming the field."""

from __future__ import annotations

import asyncio
import html
import json
import unicodedata
import uuid
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from kadence import Client
from kadence import kafka as ingress
from kadence._cli.workflow import workflow as workflow_group
from kadence._http import path_segment
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(60)

UI = {"X-Kadence-UI": "1"}


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


async def _start(http: aiohttp.ClientSession, cluster: Cluster, **body: Any) -> tuple[int, dict[str, Any]]:
    body = {"workflow_type": "T", "task_queue": "q-nobody", **body}
    async with http.post(f"{cluster.url}/api/v1/namespaces/default/workflows", json=body) as answer:
        return answer.status, await answer.json()


async def _started(http: aiohttp.ClientSession, cluster: Cluster, ids: list[str]) -> dict[str, str]:
    runs = {}
    for wid in ids:
        status, answer = await _start(http, cluster, workflow_id=wid)
        assert status == 201 and answer["workflow_id"] == wid, (wid, answer)
        runs[wid] = answer["run_id"]
    return runs


def _cli_describe(cluster: Cluster, workflow_id: str) -> Any:
    return CliRunner().invoke(workflow_group, ["describe", "-w", workflow_id, "--output", "json"],
                              env={"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default"})


async def test_every_odd_id_the_api_takes_is_described_signaled_and_read_again(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    nfc = unicodedata.normalize("NFC", f"caf\u00e9-{tag}")
    ids = [f"a/{tag}", f"a%2F{tag}", f"x/{tag}/history", f"{{{tag}}}", f" {tag} ", f"z\u200b{tag}", nfc,
           unicodedata.normalize("NFD", nfc), f"a?b#{tag}", f"..{tag}", tag + "q" * 994, "\U0001f600" * 500]
    client = await Client.connect(cluster.url)
    try:
        async with aiohttp.ClientSession() as http:
            runs = await _started(http, cluster, ids)
            # Ids are compared as they are: the NFC and NFD forms of one name are two workflows.
            assert runs[nfc] != runs[unicodedata.normalize("NFD", nfc)]
            for wid in ids:
                handle = client.get_workflow_handle(wid)
                described = await handle.describe()
                assert (described["workflow_id"], described["run_id"]) == (wid, runs[wid]), wid
                await handle.signal("poke", wid)
                assert (await handle.history())[-1]["event_type"] == "WorkflowExecutionSignaled", wid
                await handle.terminate("done")
            for wid in (f"a/{tag}", f" {tag} "):
                cli = await asyncio.to_thread(_cli_describe, cluster, wid)
                assert cli.exit_code == 0 and json.loads(cli.output)["run_id"] == runs[wid], (wid, cli.output)
    finally:
        await client.close()


async def test_a_dot_segment_is_refused_as_a_new_workflow_id_task_queue_or_schedule_id(cluster: Cluster) -> None:
    """'.' and '..' were started (201) and then never described, signaled or polled: every HTTP
    client resolves a dot segment of a path away (404, or 405 on a shorter route)."""
    tag = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession() as http:
        for dots in (".", ".."):
            status, answer = await _start(http, cluster, workflow_id=dots)
            assert (status, answer["field"]) == (400, "workflow_id"), answer
            status, answer = await _start(http, cluster, workflow_id=f"w-{tag}", task_queue=dots)
            assert (status, answer["field"]) == (400, "task_queue"), answer
            for schedule_id, queue, field in ((dots, "q", "schedule_id"), (f"s-{tag}", dots, "action.task_queue")):
                async with http.post(f"{cluster.url}/api/v1/namespaces/default/schedules",
                                     json={"schedule_id": schedule_id, "spec": {"interval": "1h"},
                                           "action": {"workflow_type": "T", "task_queue": queue}}) as created:
                    refused = await created.json()
                    assert (created.status, refused["field"]) == (400, field), refused
        # Over Kafka too: refused with a reply, not started as a run no HTTP call could name.
        async with ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
            reply = await kafka.start_workflow("default", "..", "T", "q-nobody")
            assert not reply.ok and reply.error_type == "InvalidArgument" and "workflow_id" in (reply.error_message or "")
        # '...' is no dot segment: taken and named again.
        status, answer = await _start(http, cluster, workflow_id=f"...{tag}", task_queue="...")
        assert status == 201, answer
        async with http.get(f"{cluster.url}/api/v1/namespaces/default/workflows/{path_segment(f'...{tag}')}") as got:
            assert (await got.json())["task_queue"] == "..."


async def test_the_web_ui_shows_and_acts_on_a_workflow_or_schedule_whose_id_has_braces(cluster: Cluster) -> None:
    """The UI's routes took aiohttp's default segment pattern, which refuses '{' and '}': the
    page of workflow '{x}' and its buttons answered 404, though the API takes the id."""
    tag = uuid.uuid4().hex[:6]
    ids = [f"{{{tag}}}", f"}}{tag}{{"]
    client = await Client.connect(cluster.url)
    try:
        async with aiohttp.ClientSession() as http:
            await _started(http, cluster, ids)
            for wid in ids:
                async with http.get(f"{cluster.url}/ui/namespaces/default/workflows/{path_segment(wid)}") as page:
                    assert page.status == 200 and html.escape(wid) in await page.text(), (wid, page.status)
                async with http.post(f"{cluster.url}/ui/api/namespaces/default/workflows/{path_segment(wid)}"
                                     "/terminate", json={"reason": "from the ui"}, headers=UI) as answer:
                    assert answer.status == 200, await answer.text()
                assert (await client.get_workflow_handle(wid).describe())["status"] == "Terminated"
            sid = f"{{s-{tag}}}"
            async with http.post(f"{cluster.url}/api/v1/namespaces/default/schedules",
                                 json={"schedule_id": sid, "spec": {"interval": "1h"}, "paused": True,
                                       "action": {"workflow_type": "T", "task_queue": "q-nobody"}}) as created:
                assert created.status == 201, await created.text()
            async with http.post(f"{cluster.url}/ui/api/namespaces/default/schedules/{path_segment(sid)}/unpause",
                                 json={}, headers=UI) as answer:
                assert answer.status == 200 and not (await answer.json())["paused"], await answer.text()
            async with http.delete(f"{cluster.url}/api/v1/namespaces/default/schedules/{path_segment(sid)}"):
                pass
    finally:
        await client.close()


async def test_a_workflow_named_count_is_described_not_counted(cluster: Cluster) -> None:
    """GET /workflows/count is the count route: the SDK's describe of workflow "count" got
    {"count": n} back, and `kadence workflow describe -w count` printed it as the run."""
    client = await Client.connect(cluster.url)
    try:
        async with aiohttp.ClientSession() as http:
            status, answer = await _start(http, cluster, workflow_id="count", id_conflict_policy="UseExisting")
            assert status == 201, answer
            run = answer["run_id"]
            described = await client.get_workflow_handle("count").describe()
            assert (described["workflow_id"], described["run_id"]) == ("count", run), described
            assert (await client.get_workflow_handle("count", run_id=run).describe())["run_id"] == run
            cli = await asyncio.to_thread(_cli_describe, cluster, "count")
            assert cli.exit_code == 0 and json.loads(cli.output)["run_id"] == run, cli.output
            # Without run_id the path is the count, as documented.
            async with http.get(f"{cluster.url}/api/v1/namespaces/default/workflows/count") as counted:
                assert set(await counted.json()) == {"count"}
        await client.get_workflow_handle("count").terminate("done")
    finally:
        await client.close()
