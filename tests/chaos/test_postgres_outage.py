"""PostgreSQL stops for a few seconds under running workflows (issue 15, item 3).

Every workflow must complete with no process restarted by hand: the shard loops wait
the outage out (timers come due and signals arrive while the database is gone), and
/health reports the stalled shards (503) while it lasts and 200 once they are back.
"""

from __future__ import annotations

import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedPostgres
from services.history.health import ShardState
from tests.chaos.conftest import CHAOS_SHARDS
from tests.chaos.workload import DEADLINE_S, run_through

pytestmark = pytest.mark.timeout(DEADLINE_S + 60)


async def test_every_workflow_completes_through_a_postgres_outage(
        chaos_cluster: Cluster, own_postgres: EmbeddedPostgres) -> None:
    health = await run_through(chaos_cluster, own_postgres.halt, own_postgres.resume, prefix="pg")
    # Nothing was restarted: the same services, their loops alive, no fatal error.
    assert chaos_cluster.fatal.reason is None
    shards = chaos_cluster.history.shards
    assert len(shards) == CHAOS_SHARDS and all(s.health().state is ShardState.RUNNING for s in shards.values())
    assert all(s.failure is None for s in shards.values())
    # /health said so: stalled during the outage (and healthy after it, see run_through).
    assert 503 in health.statuses, health.statuses
