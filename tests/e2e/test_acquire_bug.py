"""A history shard's acquisition that fails for a reason that is no outage (a bug, a refused
statement) takes the process down (fatal: /health 503, `python -m services.history` exits 1)
so that a supervisor restarts it.

The error used to end in the consumer's rebalance listener, which aiokafka logs and carries
on from: the partition stayed assigned with no shard, its workflows waited for ever, and
/health, which lists the shards running, said ok.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from services.history.store import HistoryStore
from tests.e2e.conftest import _settings
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


async def test_a_shard_acquisition_failing_on_a_bug_is_fatal(broker: EmbeddedBroker, fresh_dsn: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: HistoryStore, *args: Any, **kwargs: Any) -> int:
        raise RuntimeError("a bug where the shard finds where it resumes")

    # Where a shard resumes: the stored offset's replay bound, or (a new broker) the rewind.
    monkeypatch.setattr(HistoryStore, "replay_until", broken)
    monkeypatch.setattr(HistoryStore, "rewind", broken)
    async with Cluster(_settings(broker, fresh_dsn)) as cluster:
        reason = await eventually(lambda: cluster.fatal.reason, timeout=30, what="the process declared fatal")
        assert reason is not None and "a bug where the shard finds where it resumes" in reason
