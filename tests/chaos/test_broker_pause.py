"""The broker stops answering for a few seconds under running workflows (SIGSTOP, then SIGCONT).

The consumers, producers and shard relays wait it out; every workflow completes and no
loop dies (no fatal error, nothing restarted by hand).
"""

from __future__ import annotations

import os
import signal

import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from tests.chaos.workload import DEADLINE_S, run_through

pytestmark = pytest.mark.timeout(DEADLINE_S + 60)


async def test_every_workflow_completes_through_a_broker_pause(
        chaos_cluster: Cluster, broker: EmbeddedBroker) -> None:
    pid = broker.process.pid  # the broker this test started

    def pause() -> None:
        os.kill(pid, signal.SIGSTOP)

    def resume() -> None:
        os.kill(pid, signal.SIGCONT)

    await run_through(chaos_cluster, pause, resume, prefix="broker")
    assert chaos_cluster.fatal.reason is None
    assert all(s.failure is None for s in chaos_cluster.history.shards.values())
