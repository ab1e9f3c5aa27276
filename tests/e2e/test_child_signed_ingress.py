"""Child workflows in a namespace protected by signed ingress (KADENCE_INGRESS_KEYS): the
records history sends itself on kadence.requests (the child's start, its notices, the
signal to it) are signed with the policy's history principal, so the protected namespace
takes them: none is dead-lettered, and each verifies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kadence import Client, Worker
from kadence import kafka as ingress
from kadence_protocol import avro
from services.cluster import Cluster
from services.common import dlq as dead_letters
from services.common.bounded import BoundedRead
from services.common.embedded import EmbeddedBroker
from services.common.ingress_auth import IngressPolicy

from .test_child_workflows import Doubler, Parent, _ids_on_two_shards
from .test_signed_ingress import protected_cluster

pytestmark = pytest.mark.timeout(90)
POLICY = {"principals": {"billing": ["billing-key-0123456789"], "frontend": ["frontend-key-0123456789"],
                         "kadence-history": ["history-key-0123456789"]},
          "namespaces": {"shop": ["billing"]}, "frontend_principal": "frontend",
          "history_principal": "kadence-history"}
QUEUE = "q-signed-children"


@pytest.fixture
async def protected(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    async with protected_cluster(broker, fresh_dsn, tmp_path / "ingress.json", POLICY, monkeypatch) as c:
        yield c


async def test_a_child_on_another_shard_runs_in_a_protected_namespace(protected: Cluster) -> None:
    bootstrap = protected.settings.kafka_bootstrap
    parent_id, child_id = _ids_on_two_shards()
    client = await Client.connect(protected.url, namespace="shop")
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[Doubler, Parent]):
            handle = await client.start_workflow(Parent.run, child_id, 21, id=parent_id, task_queue=QUEUE)
            # Unsigned, the child's start would be dead-lettered and the parent wait for ever.
            assert await asyncio.wait_for(handle.result(), 30) == "result 42"
    finally:
        await client.close()
    assert await dead_letters.list_dead_letters(bootstrap) == []
    policy = IngressPolicy.from_mapping(POLICY)
    async with BoundedRead(bootstrap, ingress.REQUESTS) as read:
        records = [r async for r in read]
    by_history = [r for r in records if dict(r.headers).get("kadence-principal") == b"kadence-history"]
    kinds = {avro.decode(r.value)[0] for r in by_history if r.value is not None}
    assert {"StartChildWorkflowExecution", "ChildWorkflowNotice", "SignalExternalWorkflowExecution"} <= kinds
    assert all(policy.refusal("shop", r.key, r.value or b"", r.headers) is None for r in by_history)
