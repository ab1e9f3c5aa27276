"""Command notices (services/common/command_notices.py): a frontend in another process tells
history's owner of each command the broker acknowledged, and the shard takes it without
waiting for its fetch. Only a hint: with notices lost, refused, off, or history's internal
API down, every workflow still completes through the fetch, and each command runs once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition

from kadence import Client, Worker
from services.cluster import Cluster
from services.common import db, internal_auth, kafka
from services.common.command_notices import HistoryOwners, NoticedCommands, NoticeFailed, owner_address
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
KEY = "command-notices-test-key"


@pytest.fixture
async def separate(request: pytest.FixtureRequest, broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    """Every hop through the broker (KADENCE_COLOCATE=0), command and reply notices on unless
    the test is parametrized with settings that turn them off."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, colocate=False, internal_key=KEY,
                        **getattr(request, "param", {}))
    async with Cluster(settings) as c:
        yield c


async def _run_workflows(url: str, tq: str, n: int = 3) -> None:
    client = await Client.connect(url, namespace="default")
    try:
        async with Worker(client, task_queue=tq, workflows=[EchoWorkflow], activities=[echo]):
            for i in range(n):
                result = await client.execute_workflow(EchoWorkflow.run, f"hi-{i}", id=f"{tq}-{uuid.uuid4().hex[:8]}",
                                                       task_queue=tq)
                assert result == f"hi-{i}"
    finally:
        await client.close()


def _notices(cluster: Cluster) -> NoticedCommands:
    notices = cluster.frontend.command_notices
    assert notices is not None
    return notices


async def _stored_offsets(dsn: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["shard_id"]: r["kafka_offset"] for r in await conn.fetch("SELECT shard_id, kafka_offset FROM shards")}
    finally:
        await conn.close()


async def test_a_noticed_command_is_taken_without_the_fetch_and_only_once(separate: Cluster) -> None:
    history = separate.history
    consumer = history._consumer
    assert consumer is not None
    await eventually(lambda: len(history.owned()) == 2, timeout=20, what="history owning both shards")
    tps = [TopicPartition(kafka.REQUESTS, p) for p in range(2)]
    consumer.pause(*tps)  # the fetch cannot deliver: only a notice can
    client = await Client.connect(separate.url, namespace="default")
    try:
        handle = await asyncio.wait_for(
            client.start_workflow(EchoWorkflow.run, "x", id="noticed-start", task_queue="q-noticed"), 10)
        assert handle.run_id  # history applied the start (and answered) with its fetch paused
    finally:
        consumer.resume(*tps)
        await client.close()
    assert _notices(separate).counts.sent >= 1 and history.command_notices.received >= 1
    # The fetched copy is skipped: the start ran once, and the stored offset is the log's end.
    ends = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}

    async def consumed_to_the_end() -> bool:
        stored = await _stored_offsets(separate.settings.database_url)
        return all(stored.get(p, 0) == end for p, end in ends.items())

    await eventually(consumed_to_the_end, what="the stored offsets at the log's end")
    conn = await asyncpg.connect(separate.settings.database_url)
    try:
        runs = await conn.fetchval("SELECT count(*) FROM executions WHERE workflow_id = 'noticed-start'")
    finally:
        await conn.close()
    assert runs == 1
    await _run_workflows(separate.url, "q-noticed")  # and it goes on, fetch and notices together


async def test_with_notices_workflows_complete_and_history_takes_them(separate: Cluster) -> None:
    # Before its shards are acquired, history is nobody's owner yet: those notices would fail.
    await eventually(lambda: len(separate.history.owned()) == 2, timeout=20, what="history owning both shards")
    await _run_workflows(separate.url, "q-cmd-notices")
    counts = _notices(separate).counts
    assert counts.sent > 0 and counts.failed == 0
    assert separate.history.command_notices.received == counts.sent + counts.not_owned


async def test_with_every_notice_lost_workflows_complete_through_the_fetch(
        separate: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async def lost(self: HistoryOwners, partition: int, notices: object, timeout: float) -> Any:
        raise NoticeFailed("the notice was lost")

    monkeypatch.setattr(HistoryOwners, "notify", lost)
    await _run_workflows(separate.url, "q-cmd-lost")
    counts = _notices(separate).counts
    assert counts.failed > 0 and counts.sent == 0
    assert separate.history.command_notices.received == 0


@pytest.mark.parametrize("separate", [{"command_notices": False}], indirect=True, ids=["notices-off"])
async def test_with_notices_off_workflows_complete_through_the_fetch(separate: Cluster) -> None:
    assert separate.frontend.command_notices is None
    assert separate.history.health_server is None  # no internal API: nothing to serve
    assert owner_address(separate.history.owner) is None
    await _run_workflows(separate.url, "q-cmd-off")
    assert separate.history.command_notices.received == 0


async def test_with_history_internal_api_down_workflows_complete_through_the_fetch(separate: Cluster) -> None:
    server = separate.history.health_server
    assert server is not None
    await server.stop()  # shards.owner still names its address: every notice fails
    await _run_workflows(separate.url, "q-cmd-down")
    counts = _notices(separate).counts
    assert counts.failed > 0 and counts.sent == 0


async def test_notices_without_the_internal_key_are_refused_and_workflows_complete(separate: Cluster) -> None:
    owners = _notices(separate)._owners
    assert isinstance(owners, HistoryOwners)
    owners._headers = internal_auth.headers("not-the-internal-key")
    await _run_workflows(separate.url, "q-cmd-refused")
    counts = _notices(separate).counts
    assert counts.failed > 0 and counts.sent == 0
    assert separate.history.command_notices.received == 0


# ---- history as a process of its own ----------------------------------------------------------

def _history_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.history"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def end_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the service processes a test started (by their handles), killing one that lingers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def test_history_in_its_own_process_takes_notices_found_by_shards_owner(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, internal_key=KEY)
    env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": broker.bootstrap, "KADENCE_DATABASE_URL": fresh_dsn,
           "KADENCE_SHARDS": "2", "KADENCE_TASK_PARTITIONS": "2", "KADENCE_SESSION_TIMEOUT_MS": "2000",
           "KADENCE_INTERNAL_KEY": KEY}
    proc = _history_process(env, tmp_path / "history.log")
    pool = await db.create_pool(fresh_dsn)
    matching = MatchingService(settings, pool=pool)
    frontend: FrontendService | None = None
    try:
        await matching.start()
        frontend = FrontendService(settings, pool=pool)  # history fetches, and is told
        await frontend.start()

        async def owners_serve() -> bool:
            if proc.poll() is not None:
                pytest.fail("the history process exited; see its log")
            rows = await pool.fetch("SELECT owner FROM shards")
            return len(rows) == 2 and all(owner_address(r["owner"]) for r in rows)

        await eventually(owners_serve, timeout=30, every=0.1, what="history owning both shards, serving notices")
        await _run_workflows(frontend.url, "q-cmd-process", n=5)
        notices = frontend.command_notices
        assert notices is not None and notices.counts.sent > 0 and notices.counts.failed == 0
    finally:
        if frontend is not None:
            await frontend.stop()
        await matching.stop()
        await pool.close()
        end_processes([proc])


async def test_with_signed_ingress_history_takes_no_command_notices(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A noticed command is taken as handed over, without the signature check of a fetched record.
    monkeypatch.delenv("KADENCE_INGRESS_PRINCIPAL", raising=False)
    monkeypatch.delenv("KADENCE_INGRESS_KEY", raising=False)
    policy = tmp_path / "ingress.json"
    policy.write_text(json.dumps({"principals": {"frontend": ["frontend-key-0123456789"]}, "namespaces": {"shop": ["frontend"]},
                                  "frontend_principal": "frontend"}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, colocate=False, ingress_keys=str(policy))
    async with Cluster(settings) as c:
        assert c.history.health_server is None and owner_address(c.history.owner) is None
        await _run_workflows(c.url, "q-cmd-signed", n=1)
        assert c.history.command_notices.received == 0
