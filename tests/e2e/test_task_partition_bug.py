"""Matching's taking of a task partition that fails for a reason that is no outage takes the
process down (fatal) so that a supervisor restarts it. The error used to end in the
consumer's rebalance listener, which aiokafka logs and carries on from: the partition stayed
assigned and not owned, its tasks skipped, while matching answered as healthy."""

from __future__ import annotations

from typing import Any

import pytest

from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from services.matching.backlog import BacklogStore
from tests.e2e.conftest import _settings
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


async def test_a_task_partition_taken_on_a_bug_is_fatal(broker: EmbeddedBroker, fresh_dsn: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: BacklogStore, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug where matching counts a partition's backlog")

    monkeypatch.setattr(BacklogStore, "counts", broken)
    async with Cluster(_settings(broker, fresh_dsn)) as cluster:
        reason = await eventually(lambda: cluster.fatal.reason, timeout=30, what="the process declared fatal")
        assert reason is not None and "a bug where matching counts a partition's backlog" in reason
