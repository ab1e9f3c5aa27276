"""Signed task tokens on a whole cluster: a hand-written, altered or foreign-namespace token
gets 403 and changes nothing; the token a poll returned completes the task."""

from __future__ import annotations

import base64
import json
import uuid

import aiohttp
import orjson
import pytest

from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)

NS = "/api/v1/namespaces/default"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _call(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_forged_altered_and_foreign_tokens_get_403_a_real_one_works(cluster: Cluster) -> None:
    wid = f"tok-{uuid.uuid4().hex[:8]}"
    queue = f"q-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as http:
        # A registered namespace other than the token's (an unregistered one answers 404).
        status, _ = await _call(http, cluster.url + "/api/v1/namespaces", {"name": "other", "retention": "1d"})
        assert status == 201
        status, _ = await _call(http, cluster.url + f"{NS}/workflows",
                                {"workflow_id": wid, "workflow_type": "T", "task_queue": queue})
        assert status == 201
        status, body = await _call(http, cluster.url + f"{NS}/task-queues/{queue}/workflow-tasks/poll",
                                   {"wait_seconds": 20, "identity": "me"})
        assert status == 200 and len(body["tasks"]) == 1
        task = body["tasks"][0]
        real = task["task_token"]
        done = [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": json.dumps("done")}}]
        fields = {"namespace": "default", "workflow_id": wid, "run_id": task["run_id"],
                  "scheduled_event_id": task["scheduled_event_id"], "attempt": task["attempt"],
                  "kind": "workflow", "started_time": task["started_time"], "task_queue": queue}

        # Written by hand as the unsigned tokens of earlier versions were.
        forged = _b64(orjson.dumps(fields))
        # The real token's payload pointed at another run, its signature kept.
        _payload, mac = real.split(".")
        altered = _b64(orjson.dumps({**fields, "workflow_id": "someone-else"})) + "." + mac
        for token in (forged, altered, forged + "." + mac):
            status, body = await _call(http, cluster.url + f"{NS}/workflow-tasks/complete",
                                       {"task_token": token, "commands": done})
            assert (status, body["error"], body["field"]) == (403, "PermissionDenied", "task_token"), body
        # The real token, presented in another namespace.
        status, body = await _call(http, cluster.url + "/api/v1/namespaces/other/workflow-tasks/complete",
                                   {"task_token": real, "commands": done})
        assert (status, body["error"]) == (403, "PermissionDenied")
        assert "issued for namespace 'default'" in body["message"]
        # In a batch of answers, too.
        status, body = await _call(http, cluster.url + f"{NS}/task-answers", {"answers": [
            {"operation": "complete_workflow_task", "body": {"task_token": forged, "commands": done}}]})
        assert status == 200 and body["results"][0]["status"] == 403

        # Nothing of that reached the run; the real token completes it.
        async with http.get(cluster.url + f"{NS}/workflows/{wid}") as resp:
            assert (await resp.json())["status"] == "Running"
        status, _ = await _call(http, cluster.url + f"{NS}/workflow-tasks/complete",
                                {"task_token": real, "commands": done})
        assert status == 200
        async with http.get(cluster.url + f"{NS}/workflows/{wid}/result", params={"wait_seconds": "20"}) as resp:
            outcome = await resp.json()
        assert outcome["status"] == "Completed", outcome
