"""PostgreSQL stops answering without going away (its processes paused: SIGSTOP, then
SIGCONT): connections stay open and queries simply wait, with no error to retry on.

Every workflow completes once it answers again, and /health reports the shards whose batch
is stuck meanwhile (503, state ``blocked``): it answered 200 throughout, the shard loops
being neither retrying nor stopped, only waiting.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedPostgres
from tests.chaos.workload import DEADLINE_S, run_through

pytestmark = pytest.mark.timeout(DEADLINE_S + 60)


def _processes(pg: EmbeddedPostgres) -> list[psutil.Process]:
    """The test's own PostgreSQL: its postmaster (postmaster.pid) and every backend of it."""
    pid = int((Path(pg.server.pgdata) / "postmaster.pid").read_text().split("\n", 1)[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


async def test_every_workflow_completes_through_a_postgres_pause_and_health_says_so(
        chaos_cluster: Cluster, own_postgres: EmbeddedPostgres) -> None:
    paused: list[psutil.Process] = []

    def pause() -> None:
        paused.extend(_processes(own_postgres))
        for p in paused:
            os.kill(p.pid, signal.SIGSTOP)

    def resume() -> None:
        for p in paused:
            os.kill(p.pid, signal.SIGCONT)

    health = await run_through(chaos_cluster, pause, resume, prefix="pgpause")
    assert chaos_cluster.fatal.reason is None
    assert all(s.failure is None for s in chaos_cluster.history.shards.values())
    assert 503 in health.statuses, health.statuses
