"""What a shard tells an observer (its traces and metrics, history/telemetry.py) as it works.

The shard's units call these hooks; the plain :class:`ShardObserver` does nothing, so a
service without telemetry runs the plain loop. An observer never changes what the shard
does: it sees, it may wrap a command's run in a span, and it reads the units' public
state for its gauges.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord

from .builder import Mutation
from .state import MutableState

# Runs one command of a batch: a dead-letter reason, or None (see runner.py).
RunCommand = Callable[[Any, ConsumerRecord[bytes, bytes]], Awaitable[str | None]]
# The cached state of a workflow's current run, if cached: (namespace, workflow_id) -> state.
RunOf = Callable[[tuple[str, str]], MutableState | None]


class ShardObserver:
    """The hooks, each a no-op here."""

    def bind(self, shard_id: int, *, backlog: Callable[[], int], run_of: RunOf) -> None:
        """The shard is built: its id, its outbox backlog (rows), and its cached runs."""

    def acquired(self, offset: int) -> None:
        """The shard is taken over and consumes from ``offset``."""

    def wrap_command(self, run: RunCommand) -> RunCommand:
        """How each command is run: ``run`` itself, or ``run`` inside a span."""
        return run

    def batch(self, size: int) -> None:
        """A batch of ``size`` records and timer firings is about to run."""

    def processed(self, consumed: int) -> None:
        """A batch is done (committed or given up); the next offset taken is ``consumed``."""

    def committed(self, mutations: Sequence[Mutation]) -> None:
        """A batch committed these mutations."""

    def stopped(self) -> None:
        """The shard stopped."""


NO_OBSERVER = ShardObserver()
