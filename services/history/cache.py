"""A shard's run cache: the mutable states of recent runs, and each workflow's current run.

Both are bounded LRU maps, and closed runs have a smaller bound of their own: a closed
run's state is seldom read again (a late duplicate, a start that reuses the workflow id:
both read it back from the store), while thousands of them kept until the whole bound is
reached made the server's heap, and its CPU per workflow, grow over a long-lived run
(README, "Sustained runs"). A state is cached only as committed (a batch that fails
drops what it changed, :meth:`RunCache.forget`); the current-run map may lack a workflow
(then the store says), and :meth:`RunCache.look_up_current` fills it for a whole batch in
one query, taking a workflow that the batch only starts as new (the commit checks it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from kadence_protocol import avro
from services.common import outage

from .memory import Tails
from .state import MutableState

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
CLOSED_SIZE = 1_000  # closed runs kept of those CACHE_SIZE, the most recently closed
_START = "StartWorkflowExecution"
WorkflowKey = tuple[str, str]


class RunStore(Protocol):
    """What the cache reads of the store (HistoryStore)."""

    async def load_state(self, run_id: str) -> MutableState | None: ...

    async def current_runs(self, keys: list[WorkflowKey]) -> dict[WorkflowKey, str]: ...


class RunCache:
    def __init__(self, store: RunStore, shard_id: int, tails: Tails, *, size: int = CACHE_SIZE,
                 closed_size: int = CLOSED_SIZE) -> None:
        self.store = store
        self.shard_id = shard_id
        self.size = size
        self.closed_size = closed_size
        self.runs: OrderedDict[str, MutableState] = OrderedDict()
        # The cached runs that are closed, least recently remembered first.
        self.closed: OrderedDict[str, None] = OrderedDict()
        self.current: OrderedDict[WorkflowKey, str] = OrderedDict()
        # Per cached run, its committed events since the last completed workflow task (or
        # the newest of them): workflow tasks carry these instead of the frontend reading
        # them back from PostgreSQL. Bounded by bytes (memory.py); a run evicted loses its tail.
        self.tails = tails

    async def load(self, run_id: str) -> MutableState | None:
        state = self.runs.get(run_id)
        if state is not None:
            self.runs.move_to_end(run_id)
            return state
        state = await self.store.load_state(run_id)
        if state is not None:
            self.remember(state)
        return state

    def remember(self, state: MutableState, *, current: bool = False) -> None:
        """Cache ``state``; a running run (or ``current``: one a batch just made, whose start
        event is not added yet) is its workflow's current run from now on."""
        self.runs[state.run_id] = state
        self.runs.move_to_end(state.run_id)
        if current or state.running or (state.namespace, state.workflow_id) not in self.current:
            self.current[(state.namespace, state.workflow_id)] = state.run_id
            self.current.move_to_end((state.namespace, state.workflow_id))
        if state.running or state.status is None:
            self.closed.pop(state.run_id, None)
        else:
            self.closed[state.run_id] = None
            self.closed.move_to_end(state.run_id)
            while len(self.closed) > self.closed_size:
                evicted, _ = self.closed.popitem(last=False)
                self.runs.pop(evicted, None)
                self.tails.pop(evicted, None)
        while len(self.runs) > self.size:
            evicted, _ = self.runs.popitem(last=False)
            self.closed.pop(evicted, None)
            self.tails.pop(evicted, None)
        while len(self.current) > self.size:
            self.current.popitem(last=False)

    def forget(self, states: Iterable[MutableState]) -> None:
        """Drop runs a failed batch changed in memory: the store has them as they were."""
        for state in states:
            self.runs.pop(state.run_id, None)
            self.closed.pop(state.run_id, None)
            self.current.pop((state.namespace, state.workflow_id), None)

    async def look_up_current(self, batch: list[Any], *, assume_new: bool = True) -> tuple[
            frozenset[WorkflowKey], frozenset[WorkflowKey]]:
        """Find the current runs of the batch's workflows missing from the cache in one query.

        They join ``current``. Returned: the workflows to run as having no run at all, and
        of those, the ones not looked up (``assume_new``: workflows the batch only starts are
        taken as new, and the commit checks it, see store.commit), so a start of a new
        workflow costs no round trip before its commit.
        """
        keys: set[WorkflowKey] = set()
        starts: set[WorkflowKey] = set()
        for item in batch:
            if isinstance(item, list):
                for record in item:
                    if record.key is not None:
                        namespace, _, workflow_id = record.key.decode("utf-8", "replace").partition("/")
                        if "\x00" in workflow_id or "\x00" in namespace:
                            continue  # not a workflow the store can hold: the command is refused
                        key = (namespace, workflow_id)
                        if key not in self.current:
                            (starts if assume_new and _is_start(record.value) else keys).add(key)
        new = frozenset(starts - keys)
        if not keys:
            return new, new
        try:
            found = await self.store.current_runs(list(keys))
        except outage.DATABASE_ERRORS as exc:
            log.warning("shard %d: current-run look-up failed (%r); each command looks up its own",
                        self.shard_id, exc)
            return new, new
        for key, run_id in found.items():
            self.current[key] = run_id
        return frozenset(keys - found.keys()) | new, new


def _is_start(value: bytes | None) -> bool:
    """Whether a command is a start, from its single-object header alone."""
    if value is None:
        return False
    try:
        return avro.schemas().name_of(value) == _START
    except avro.DecodeError:
        return False  # dead-lettered when the batch runs
