"""Signed ingress on kadence.requests (services/common/ingress_auth.py): a protected
namespace takes only records signed by an allowed principal; the rest are dead-lettered
with the reason, and the frontend signs its own records."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from kadence import Client, Worker
from kadence import kafka as ingress
from kadence_protocol.ingress_signing import IngressSigner
from services.cluster import Cluster
from services.common import dlq as dead_letters
from services.common.bounded import BoundedRead
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.ingress_auth import IngressPolicy
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(90)
BILLING_KEY = "billing-key-0123456789"
POLICY = {"principals": {"billing": [BILLING_KEY], "intruder": ["intruder-key-0123456"],
                         "frontend": ["frontend-key-0123456789"]},
          "namespaces": {"shop": ["billing"]}, "frontend_principal": "frontend"}


@asynccontextmanager
async def protected_cluster(broker: EmbeddedBroker, dsn: str, policy_path: Path, policy: dict[str, Any],
                            monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """A cluster whose namespace 'shop' (registered) takes only records signed per ``policy``."""
    monkeypatch.delenv("KADENCE_INGRESS_PRINCIPAL", raising=False)
    monkeypatch.delenv("KADENCE_INGRESS_KEY", raising=False)
    policy_path.write_text(json.dumps(policy))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, ingress_keys=str(policy_path))
    c = Cluster(settings)
    await c.start()
    try:
        assert c.pool is not None  # the protected namespace is a registered one (namespaces.py)
        await c.pool.execute("INSERT INTO namespaces (name, retention_ms) VALUES ('shop', 86400000)")
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def protected(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    async with protected_cluster(broker, fresh_dsn, tmp_path / "ingress.json", POLICY, monkeypatch) as c:
        yield c


async def test_unsigned_records_to_a_protected_namespace_are_dead_lettered(protected: Cluster) -> None:
    bootstrap = protected.settings.kafka_bootstrap
    unsigned, forged, foreign = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("unsigned", "forged", "foreign"))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        def start(wid: str) -> tuple[bytes, bytes]:
            return (ingress.encode_start("shop", wid, "EchoWorkflow", "orders", ["x"], request_id=wid),
                    f"shop/{wid}".encode())

        value, key = start(unsigned)
        await producer.send_and_wait(ingress.REQUESTS, value, key=key)
        value, key = start(forged)  # billing's name, a guessed key
        await producer.send_and_wait(ingress.REQUESTS, value, key=key, headers=IngressSigner.of(
            "billing", "guessed-key-0123456789").headers(ingress.REQUESTS, key, value))
        value, key = start(foreign)  # a principal with a valid key, not allowed in shop
        await producer.send_and_wait(ingress.REQUESTS, value, key=key, headers=IngressSigner.of(
            "intruder", "intruder-key-0123456").headers(ingress.REQUESTS, key, value))
    finally:
        await producer.stop()

    async def three_letters() -> list[dead_letters.DeadLetterEntry]:
        letters = await dead_letters.list_dead_letters(bootstrap)
        assert len(letters) == 3
        return letters

    letters = await eventually(three_letters, timeout=30)
    reasons = {e.key: e.reason for e in letters}
    assert "takes only signed commands" in reasons[f"shop/{unsigned}".encode()]
    assert "does not verify" in reasons[f"shop/{forged}".encode()]
    assert "may not send commands to namespace 'shop'" in reasons[f"shop/{foreign}".encode()]

    # Signed by billing, a start runs; the worker and client go through the frontend, which
    # signs its own records.
    wid = f"signed-{uuid.uuid4().hex[:6]}"
    async with ingress.KafkaIngress(bootstrap, signer=IngressSigner.of("billing", BILLING_KEY)) as kafka:
        reply = await kafka.start_workflow("shop", wid, "EchoWorkflow", "orders", ["signed"])
    assert reply.ok, reply
    client = await Client.connect(protected.url, namespace="shop")
    try:
        async with Worker(client, task_queue="orders", workflows=[EchoWorkflow], activities=[echo]):
            assert await client.get_workflow_handle(wid).result(timeout=30) == "signed"
    finally:
        await client.close()
    # None of the three refused runs exists.
    assert len(await dead_letters.list_dead_letters(bootstrap)) == 3
    # Every record the frontend produced carries a valid signature (a frontend in another
    # process is not handed the commands: history reads them from the broker).
    policy = IngressPolicy.from_mapping(POLICY)
    async with BoundedRead(bootstrap, ingress.REQUESTS) as read:
        records = [r async for r in read]
    by_frontend = [r for r in records if dict(r.headers).get("kadence-principal") == b"frontend"]
    assert by_frontend, "the worker's answers went through the frontend"
    assert all(policy.refusal("shop", r.key, r.value, r.headers) is None for r in by_frontend)
