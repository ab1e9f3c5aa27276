"""The audit's stored status: ``kadence audit --dsn`` records each verification (when, the
partitions and offsets read, the runs, the divergences, the hash-chain verdict) in
PostgreSQL, and the web UI's audit page and run pages show the latest one."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import aiohttp
import asyncpg
import pytest

from kadence import Client
from kadence_protocol import avro
from services.cluster import Cluster
from services.common.audit import verifications as status

from .test_audit import _published, _run_workflows

pytestmark = pytest.mark.timeout(90)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kadence.cli", "audit", "--no-progress", *args],
                          capture_output=True, text=True, timeout=30, check=False)


async def _page(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200, answer.status
        return await answer.text()


async def test_each_verification_is_stored_and_shown(cluster: Cluster, client: Client) -> None:
    bootstrap, dsn = cluster.settings.kafka_bootstrap, cluster.settings.database_url
    assert "No verification is stored yet" in await _page(f"{cluster.url}/ui/audit")
    ids = await _run_workflows(client, 2)
    await _published(cluster)

    done = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"recorded as verification \d+", done.stdout), done.stdout
    [clean] = await status.latest(cluster.pool)
    assert clean.clean and clean.chain_holds and clean.runs == 2 and clean.records >= 2 * 11
    assert clean.partitions and sum(p.end - p.start for p in clean.partitions) == clean.records
    assert clean.compared_with_postgres and clean.scope is status.Scope.TOPIC
    page = await _page(f"{cluster.url}/ui/audit")
    assert "Clean: no divergence." in page and "Every hash chain holds." in page

    # An event altered in place (its hash kept): the next verification finds it and stores it.
    conn = await asyncpg.connect(dsn)
    try:
        run_a = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", ids[0])
        run_b = await conn.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = $1", ids[1])
        row = await conn.fetchval("SELECT data FROM history_events WHERE run_id = $1 AND event_id = 5", run_a)
        event = avro.decode(row)[1]
        event["attributes"]["input"] = '["forged"]'
        await conn.execute("UPDATE history_events SET data = $1 WHERE run_id = $2 AND event_id = 5",
                           avro.encode("HistoryEvent", event), run_a)
    finally:
        await conn.close()
    done = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn)
    assert done.returncode == 1, done.stdout + done.stderr
    latest, previous = await status.latest(cluster.pool, 2)
    assert previous.id == clean.id and latest.id > clean.id
    assert latest.divergences == 2 and latest.chain_breaks == 1 and not latest.clean
    stored = await status.divergences_of(cluster.pool, latest.id)
    assert {(d.run.workflow_id, d.kind, d.event_id) for d in stored} == {
        (ids[0], "event-mismatch", 5), (ids[0], "postgres-chain-break", 5)}

    page = await _page(f"{cluster.url}/ui/audit")
    assert "2 divergence(s)" in page and "1 hash-chain break(s)" in page
    assert ids[0] in page and "postgres-chain-break" in page and f"#{clean.id}" not in page.split("Earlier")[0]
    broken = await _page(f"{cluster.url}/ui/namespaces/default/workflows/{ids[0]}")
    assert "found 2 divergence(s) in this run" in broken and "postgres-chain-break at event 5" in broken
    fine = await _page(f"{cluster.url}/ui/namespaces/default/workflows/{ids[1]}?run_id={run_b}")
    assert "found no divergence in this run" in fine

    # --no-record leaves the stored status as it was.
    done = await asyncio.to_thread(_cli, "--bootstrap", bootstrap, "--dsn", dsn, "--no-record")
    assert done.returncode == 1 and "recorded" not in done.stdout
    assert [v.id for v in await status.latest(cluster.pool, 5)] == [latest.id, clean.id]
