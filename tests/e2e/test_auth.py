"""Authentication on a whole cluster: no credential 401, another namespace 403, a worker
limited to its task queues, and the granted calls work."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend.auth import api_key_entry

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def secured(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"api_keys": [
        api_key_entry("shop-app", "shop-app-key", [{"namespace": "shop", "permissions": ["read", "write"]}]),
        api_key_entry("shop-worker", "shop-worker-key",
                      [{"namespace": "shop", "permissions": ["worker"], "task_queues": ["orders"]}]),
        api_key_entry("ops", "ops-key", [{"namespace": "*", "permissions": ["admin"]}]),
        api_key_entry("cards-worker", "cards-worker-key",
                      [{"namespace": "shop", "permissions": ["worker"], "task_queues": ["cards"]}]),
        api_key_entry("bank-worker", "bank-worker-key", [{"namespace": "bank", "permissions": ["worker"]}]),
    ]}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, auth_config=str(config))
    async with Cluster(settings) as c:
        yield c


async def test_calls_are_authenticated_and_authorized_per_namespace(secured: Cluster) -> None:
    url = secured.url + "/api/v1/namespaces"
    wid = f"auth-{uuid.uuid4().hex[:8]}"
    start = {"workflow_id": wid, "workflow_type": "T", "task_queue": "orders"}
    app, worker = {"Authorization": "Bearer shop-app-key"}, {"Authorization": "Bearer shop-worker-key"}
    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, headers: dict[str, str] | None = None,
                       body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
            async with http.request(method, url + path, headers=headers, json=body) as resp:
                return resp.status, await resp.json()

        # Registering a namespace needs an admin grant on every namespace ("*").
        status, body = await call("POST", "", app, {"name": "shop", "retention": "7d"})
        assert (status, body["error"]) == (403, "PermissionDenied")
        status, body = await call("POST", "", {"Authorization": "Bearer ops-key"}, {"name": "shop", "retention": "7d"})
        assert status == 201, body
        status, body = await call("GET", "/shop", app)
        assert (status, body["retention"]) == (200, "7d")
        status, body = await call("PATCH", "/shop", app, {"retention": "1d"})
        assert status == 403

        status, body = await call("POST", "/shop/workflows", None, start)
        assert (status, body["error"]) == (401, "Unauthenticated")
        status, body = await call("POST", "/shop/workflows", {"Authorization": "Bearer guessed"}, start)
        assert status == 401
        status, body = await call("POST", "/bank/workflows", app, start)
        assert (status, body["error"]) == (403, "PermissionDenied")
        # Starts sent together need the same grant as one start: refused whole, before any starts.
        status, body = await call("POST", "/bank/workflow-starts", app, {"starts": [start]})
        assert (status, body["error"]) == (403, "PermissionDenied")
        status, body = await call("POST", "/shop/workflow-starts", worker, {"starts": [start]})
        assert (status, body["error"]) == (403, "PermissionDenied")
        status, body = await call("POST", "/shop/workflows", app, start)
        assert status == 201, body
        status, body = await call("GET", f"/shop/workflows/{wid}", app)
        assert status == 200 and body["status"] == "Running"
        # Reading it from another namespace's URL, or terminating as the worker: refused.
        status, _ = await call("GET", f"/bank/workflows/{wid}", app)
        assert status == 403
        status, _ = await call("POST", f"/shop/workflows/{wid}/terminate", worker, {})
        assert status == 403
        # The application may not poll; the worker polls its own queue only.
        status, _ = await call("POST", "/shop/task-queues/orders/workflow-tasks/poll", app, {"wait_seconds": 0})
        assert status == 403
        status, body = await call("POST", "/shop/task-queues/cards/workflow-tasks/poll", worker, {"wait_seconds": 0})
        assert (status, body["error"]) == (403, "PermissionDenied") and "task queue 'cards'" in body["message"]
        status, body = await call("POST", "/shop/task-queues/orders/workflow-tasks/poll", worker,
                                  {"wait_seconds": 20})
        assert status == 200 and len(body["tasks"]) == 1
        done = [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": json.dumps("ok")}}]
        # A worker of another task queue holding the token (leaked, or handed on) cannot answer
        # the task: the token's task queue must be one the worker may poll.
        cards = {"Authorization": "Bearer cards-worker-key"}
        answer = {"task_token": body["tasks"][0]["task_token"], "commands": done}
        status, refused = await call("POST", "/shop/workflow-tasks/complete", cards, answer)
        assert (status, refused["error"]) == (403, "PermissionDenied") and "'orders'" in refused["message"]
        status, refused = await call("POST", "/shop/task-answers", cards,
                                     {"answers": [{"operation": "complete_workflow_task", "body": answer}]})
        assert status == 200 and refused["results"][0]["status"] == 403
        status, _ = await call("POST", "/shop/workflow-tasks/complete", worker,
                               {"task_token": body["tasks"][0]["task_token"], "commands": done})
        assert status == 200
        status, body = await call("GET", f"/shop/workflows/{wid}/result?wait_seconds=20", app)
        assert status == 200 and body["status"] == "Completed"
        # The open endpoints stay open.
        async with http.get(secured.url + "/health") as resp:
            assert resp.status == 200


async def test_sdk_client_and_worker_send_their_key(secured: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client.connect(api_key=...) and the worker on its transport run a workflow; without a
    key 401; with another namespace's key 403; $KADENCE_API_KEY is the default."""
    from kadence import Client, Worker
    from kadence.exceptions import RPCError

    from .workflows import EchoWorkflow, echo

    monkeypatch.delenv("KADENCE_API_KEY", raising=False)
    async with await Client.connect(secured.url, api_key="ops-key") as ops:
        await ops.create_namespace("shop", retention="7d")
    app = await Client.connect(secured.url, namespace="shop", api_key="shop-app-key")
    worker_client = await Client.connect(secured.url, namespace="shop", api_key="shop-worker-key")
    try:
        async with Worker(worker_client, task_queue="orders", workflows=[EchoWorkflow], activities=[echo]):
            wid = f"sdk-auth-{uuid.uuid4().hex[:8]}"
            assert await app.execute_workflow(EchoWorkflow.run, "hi", id=wid, task_queue="orders") == "hi"
        anonymous = await Client.connect(secured.url, namespace="shop")
        async with anonymous:
            with pytest.raises(RPCError) as caught:
                await anonymous.get_workflow_handle(wid).describe()
            assert (caught.value.status, caught.value.error_type) == (401, "Unauthenticated")
        # The environment's key is the default of every client (and so of every tool).
        monkeypatch.setenv("KADENCE_API_KEY", "shop-app-key")
        async with await Client.connect(secured.url, namespace="shop") as from_env:
            assert (await from_env.get_workflow_handle(wid).describe())["status"] == "Completed"
        async with await Client.connect(secured.url, namespace="bank") as elsewhere:
            with pytest.raises(RPCError) as caught:
                await elsewhere.get_workflow_handle(wid).describe()
            assert (caught.value.status, caught.value.error_type) == (403, "PermissionDenied")
    finally:
        await app.close()
        await worker_client.close()


async def test_the_ui_tells_an_unregistered_namespace_only_to_who_may_read_there(secured: Cluster) -> None:
    ns = f"nope-{uuid.uuid4().hex[:6]}"
    page = f"{secured.url}/ui/namespaces/{ns}/workflows"
    async with aiohttp.ClientSession(cookies={"kadence_ui_credential": "ops-key"}) as admin:
        async with admin.get(page) as resp:
            assert resp.status == 404 and "is not registered" in await resp.text()
    async with aiohttp.ClientSession(cookies={"kadence_ui_credential": "shop-app-key"}) as shop:
        async with shop.get(page) as resp:  # no grant there: the page's 403, nothing about the name
            assert resp.status == 403 and "is not registered" not in await resp.text()


async def test_a_worker_whose_polls_are_refused_stops_with_a_clear_error(secured: Cluster) -> None:
    """Polls of a queue the key may not poll (403), or with a key that does not verify (401):
    run() raises WorkerRefusedError after a few refusals instead of retrying forever."""
    import asyncio

    from kadence import Client, Worker
    from kadence.exceptions import WorkerRefusedError

    from .workflows import EchoWorkflow

    async with await Client.connect(secured.url, api_key="ops-key") as ops:
        with contextlib.suppress(Exception):  # another test of this cluster may have made it
            await ops.create_namespace("shop", retention="7d")
    for key, status in (("cards-worker-key", 403), ("no-such-key", 401)):
        async with await Client.connect(secured.url, namespace="shop", api_key=key) as client:
            worker = Worker(client, task_queue="orders", workflows=[EchoWorkflow])
            with pytest.raises(WorkerRefusedError) as caught:
                await asyncio.wait_for(worker.run(), timeout=20)
            assert caught.value.status == status, caught.value
            assert "check the worker's api_key and its grants" in str(caught.value)


async def test_only_a_worker_of_the_querys_namespace_and_queue_answers_it(secured: Cluster) -> None:
    """A query id reaches only a poller of its queue, but it is not a secret to everyone: a
    worker of another namespace, or of another queue of the namespace, holding it is answered
    as if no such query waited (404, nothing to probe); the query's own worker answers it."""
    import asyncio

    url = secured.url + "/api/v1/namespaces"
    wid = f"query-auth-{uuid.uuid4().hex[:8]}"
    app, worker = {"Authorization": "Bearer shop-app-key"}, {"Authorization": "Bearer shop-worker-key"}
    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, headers: dict[str, str] | None = None,
                       body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
            async with http.request(method, url + path, headers=headers, json=body) as resp:
                return resp.status, await resp.json()

        async def poll() -> dict:  # type: ignore[type-arg]
            status, body = await call("POST", "/shop/task-queues/orders/workflow-tasks/poll", worker,
                                      {"wait_seconds": 20})
            assert status == 200 and len(body["tasks"]) == 1, body
            return body["tasks"][0]  # type: ignore[no-any-return]

        for namespace in ("shop", "bank"):
            await call("POST", "", {"Authorization": "Bearer ops-key"}, {"name": namespace, "retention": "7d"})
        status, body = await call("POST", "/shop/workflows", app,
                                  {"workflow_id": wid, "workflow_type": "T", "task_queue": "orders"})
        assert status == 201, body
        # The first task completes with no command: the run is open and may be queried.
        status, body = await call("POST", "/shop/workflow-tasks/complete", worker,
                                  {"task_token": (await poll())["task_token"], "commands": []})
        assert status == 200, body
        asked = asyncio.create_task(call("POST", f"/shop/workflows/{wid}/query", app,
                                         {"query_type": "status", "timeout_ms": 30_000}))
        try:
            task = await poll()
            query_id = task["query"]["query_id"]
            answer = {"result": json.dumps("from the shop's worker")}
            respond = f"/queries/{query_id}/respond"
            for namespace, key in (("bank", "bank-worker-key"), ("shop", "cards-worker-key")):
                status, refused = await call("POST", f"/{namespace}{respond}", {"Authorization": f"Bearer {key}"},
                                             {"result": json.dumps("forged")})
                assert (status, refused["error"]) == (404, "NotFound"), (key, refused)
                never = f"0:{uuid.uuid4().hex}"  # an id nobody issued: the same answer, word for word
                status, unknown = await call("POST", f"/{namespace}/queries/{never}/respond",
                                             {"Authorization": f"Bearer {key}"}, {"result": "1"})
                assert status == 404 and refused == {k: str(v).replace(never, query_id) for k, v in unknown.items()}
            status, refused = await call("POST", f"/shop{respond}", {"Authorization": "Bearer bank-worker-key"},
                                         {"result": json.dumps("forged")})
            assert (status, refused["error"]) == (403, "PermissionDenied")
            assert not asked.done()
            status, body = await call("POST", f"/shop{respond}", worker, answer)
            assert status == 200, body
            status, body = await asyncio.wait_for(asked, 30)
            assert (status, json.loads(body["result"])) == (200, "from the shop's worker"), body
        finally:
            asked.cancel()
