"""One PostgreSQL process paused (SIGSTOP) for 10 s under the chaos workload, then continued.

A backend serving history's commits: the server answers every other connection meanwhile,
while the commit on that one (and whatever waits for the locks it holds) neither answers
nor fails. Every workflow completes once it answers again, no loop has died, and /health
said so while it lasted (503: the shard whose batch waits is ``blocked`` past the stall
bound).

The postmaster alone: the open connections answer, a new one waits (the postmaster forks
its backend). Every workflow completes, no loop has died.
"""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedPostgres
from tests.chaos.test_postgres_pause import _processes
from tests.chaos.workload import DEADLINE_S, run_through

PAUSE_S = 10.0  # ten times the chaos cluster's stall threshold
pytestmark = pytest.mark.timeout(DEADLINE_S + PAUSE_S + 60)


async def _committing_backends(dsn: str) -> set[int]:
    """The backends whose last statement was a shard batch's commit (kadence_commit_v2)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT kadence_commit_v2(%'"
                                " AND pid <> pg_backend_pid()")
        return {int(r["pid"]) for r in rows}
    finally:
        await conn.close()


async def test_every_workflow_completes_through_a_paused_commit_backend(
        chaos_cluster: Cluster, own_postgres: EmbeddedPostgres) -> None:
    paused: list[int] = []

    def pause() -> None:
        ours = {p.pid for p in _processes(own_postgres)}  # only this test's server's processes
        backends = asyncio.run(_committing_backends(own_postgres.dsn)) & ours
        assert backends, "no backend has run a commit yet"
        paused.extend(sorted(backends)[:1])
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)

    def resume() -> None:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)

    try:
        health = await run_through(chaos_cluster, pause, resume, prefix="pgbackend", lasting=PAUSE_S)
    finally:
        resume()  # idempotent: a SIGCONT to a running process does nothing
    print(f"paused backend {paused}; /health answers {sorted(set(health.statuses))}")
    assert chaos_cluster.fatal.reason is None
    assert all(s.failure is None for s in chaos_cluster.history.shards.values())
    assert 503 in health.statuses, health.statuses


async def test_every_workflow_completes_through_a_paused_postmaster(
        chaos_cluster: Cluster, own_postgres: EmbeddedPostgres) -> None:
    postmaster = _processes(own_postgres)[0].pid  # this test's server's

    def pause() -> None:
        os.kill(postmaster, signal.SIGSTOP)

    def resume() -> None:
        os.kill(postmaster, signal.SIGCONT)

    try:
        health = await run_through(chaos_cluster, pause, resume, prefix="postmaster", lasting=PAUSE_S)
    finally:
        resume()
    print(f"paused postmaster; /health answers {sorted(set(health.statuses))}")
    assert chaos_cluster.fatal.reason is None
    assert all(s.failure is None for s in chaos_cluster.history.shards.values())
