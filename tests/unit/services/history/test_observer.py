"""The shard's observer (services/history/observer.py): injected through ShardConfig, told
of each batch and commit, and wrapping each command's run; the shard works the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from services.history.builder import Mutation
from services.history.observer import RunCommand, RunOf, ShardObserver
from services.history.shard import Shard, ShardConfig
from tests.helpers import eventually
from tests.unit.services.history.test_shard_outage import FlakyStore, _running_state, _signal, published  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(20)


class Recorder(ShardObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.run_of: RunOf | None = None

    def bind(self, shard_id: int, *, backlog: Any, run_of: RunOf) -> None:
        self.seen.append(("bind", shard_id))
        self.run_of = run_of

    def wrap_command(self, run: RunCommand) -> RunCommand:
        async def wrapped(ctx: Any, record: Any) -> str | None:
            self.seen.append(("command", record.offset))
            return await run(ctx, record)
        return wrapped

    def batch(self, size: int) -> None:
        self.seen.append(("batch", size))

    def processed(self, consumed: int) -> None:
        self.seen.append(("processed", consumed))

    def committed(self, mutations: Sequence[Mutation]) -> None:
        self.seen.append(("committed", [e["event_type"] for m in mutations for e in m.events]))

    def stopped(self) -> None:
        self.seen.append(("stopped", None))


async def test_the_observer_sees_each_batch_command_and_commit(published: list[Any]) -> None:  # noqa: F811
    store = FlakyStore(await _running_state())
    recorder = Recorder()
    shard = Shard(0, store, None, "me", ShardConfig(observer=lambda: recorder))  # type: ignore[arg-type]
    shard.start()
    try:
        await shard.feed([_signal(0), _signal(1)])
        await eventually(lambda: ("processed", 2) in recorder.seen, what="the batch processed")
        assert recorder.seen == [("bind", 0), ("batch", 2), ("command", 0), ("command", 1),
                                 ("committed", ["WorkflowExecutionSignaled", "WorkflowExecutionSignaled"]),
                                 ("processed", 2)]
        assert store.commits[0][0] == 2
        assert recorder.run_of is not None
        state = recorder.run_of((store.state.namespace, store.state.workflow_id))
        assert state is not None and state.run_id == store.state.run_id
    finally:
        await shard.stop()
    assert recorder.seen[-1] == ("stopped", None)
