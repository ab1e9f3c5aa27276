"""A payload is held to its limits by its size as sent: the frontend writes arguments and a
memo again as JSON text, and wrote every non-ASCII character escaped ('é' as 6 bytes, '😀' as
12), so a body well under the 1 MiB request limit became a payload over 2 MiB (400) or a
record over the broker's 1 MiB (503, retried by every client as if the broker were down)."""

from __future__ import annotations

import io
import json
import uuid

import aiohttp
import pytest

from kadence import Client
from kadence import kafka as ingress
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


async def test_non_ascii_arguments_and_memo_are_taken_by_their_size_as_sent(cluster: Cluster) -> None:
    base = f"{cluster.url}/api/v1/namespaces/default/workflows"
    wid = f"utf8-{uuid.uuid4().hex[:8]}"
    # 600 KB and 1 MB in UTF-8 (the second just under the request limit), 1.8 MB and 3.1 MB escaped.
    texts = ["\u00e9" * 300_000, "\u00e9\U0001f600" * 173_000, "\ud800 kept escaped"]
    memo = {"note": "\u00e9" * 300_000}
    client = await Client.connect(cluster.url)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base, data=io.BytesIO(json.dumps(
                    {"workflow_id": wid, "workflow_type": "T", "task_queue": "q-nobody", "memo": memo},
                    ensure_ascii=False).encode()), headers={"Content-Type": "application/json"}) as started:
                assert started.status == 201, await started.text()
            for text in texts:
                # A lone surrogate has no UTF-8 form: a client sends it escaped.
                body = json.dumps({"signal_name": "s", "input": [text]}, ensure_ascii="\ud800" in text).encode()
                assert len(body) < 1024 * 1024
                async with http.post(f"{base}/{wid}/signal", data=io.BytesIO(body),
                                     headers={"Content-Type": "application/json"}) as signaled:
                    assert signaled.status == 200, (len(text), signaled.status, (await signaled.text())[:300])
        handle = client.get_workflow_handle(wid)
        signals = [e for e in await handle.history() if e["event_type"] == "WorkflowExecutionSignaled"]
        assert [json.loads(e["attributes"]["input"]) for e in signals] == [[t] for t in texts]
        assert (await handle.describe())["memo"] == memo
        await handle.terminate("done")
    finally:
        await client.close()


async def test_a_record_over_the_brokers_limit_is_refused_as_too_large_not_unavailable(cluster: Cluster) -> None:
    """A body under the request limit can still make a record over the broker's: the workflow
    id comes from the path (up to 2000 bytes) besides the body. That was 503 Unavailable with
    Retry-After, which every client retries, for a record that is refused every time."""
    wid = f"long-{uuid.uuid4().hex[:8]}-" + "\u00e9" * 985  # 1000 characters, 1984 bytes
    base = f"{cluster.url}/api/v1/namespaces/default/workflows"
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"workflow_id": wid, "workflow_type": "T", "task_queue": "q-nobody"}) as a:
            assert a.status == 201, await a.text()
        body = json.dumps({"signal_name": "s", "input": ["x" * (1024 * 1024 - 100)]}).encode()
        assert len(body) < 1024 * 1024
        async with http.post(f"{base}/{wid}/signal", data=io.BytesIO(body),
                             headers={"Content-Type": "application/json"}) as refused:
            answer = await refused.json()
            assert (refused.status, answer["error"]) == (413, "RequestEntityTooLarge"), answer
            assert "Retry-After" not in refused.headers and "1 MiB" in answer["message"]
        async with http.post(f"{base}/{wid}/terminate", json={"reason": "done"}) as a:
            assert a.status == 200


async def test_kafka_ingress_sends_a_payload_up_to_historys_limit_and_history_refuses_past_it(
        cluster: Cluster) -> None:
    """docs/protocol.md: a payload between 1 and 2 MiB comes in as a kadence.requests record.
    KafkaIngress's producer kept aiokafka's 1 MiB request limit and raised
    MessageSizeTooLargeError in the client for any such record."""
    wid = f"big-{uuid.uuid4().hex[:8]}"
    client = await Client.connect(cluster.url)
    try:
        async with ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
            assert (await kafka.start_workflow("default", wid, "T", "q-nobody")).ok
            taken = "x" * (2 * 1024 * 1024 - 10)  # with its quotes and brackets: 6 bytes under the limit
            reply = await kafka.signal_workflow("default", wid, "s", [taken])
            assert reply.ok, reply
            refused = await kafka.signal_workflow("default", wid, "s", [taken + "y" * 7])
            assert (refused.ok, refused.error_type) == (False, "InvalidArgument") and "input" in str(
                refused.error_message)
        handle = client.get_workflow_handle(wid)
        signals = [e for e in await handle.history() if e["event_type"] == "WorkflowExecutionSignaled"]
        assert [json.loads(e["attributes"]["input"]) for e in signals] == [[taken]]
        await handle.terminate("done")
    finally:
        await client.close()
