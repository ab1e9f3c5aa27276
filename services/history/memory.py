"""What a shard keeps in memory per run beyond its state, each bounded.

* :class:`Tails`: per open run, its newest committed events, so a workflow task carries
  them to the worker instead of the frontend reading them back from PostgreSQL. Bounded
  by count (CARRY_MAX_EVENTS), by bytes per run and by bytes per shard. A tail cut at its
  front or dropped is only a missed shortcut: a workflow task whose events are not all in
  memory carries none, and the frontend reads the history from PostgreSQL (as for a run
  loaded from the store).
* :class:`Heartbeats`: the last heartbeat of each pending activity, dropped when the
  activity or its run is done.
"""

from __future__ import annotations

from collections import OrderedDict

from .builder import CARRY_MAX_EVENTS, Tail
from .state import MutableState

# What one event of a tail costs besides its encoding: its decoded copy (whose strings are
# about as long as the encoding) and the dicts and tuple holding it.
EVENT_OVERHEAD = 1024


def event_bytes(data: bytes) -> int:
    """The memory an event of a tail is counted as taking (an estimate, on the high side)."""
    return 2 * len(data) + EVENT_OVERHEAD


class Tails:
    """Per run, a contiguous suffix of its committed events, under byte budgets."""

    def __init__(self, run_bytes: int = 1 << 20, shard_bytes: int = 64 << 20) -> None:
        self.run_bytes = run_bytes
        self.shard_bytes = shard_bytes
        self.total = 0  # bytes of every tail held, as event_bytes counts them
        # Least recently extended first: the first to go when the shard is over budget.
        self._tails: OrderedDict[str, tuple[Tail, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tails)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._tails

    def get(self, run_id: str) -> Tail | None:
        """The run's tail; None when unknown (nothing kept, or dropped)."""
        held = self._tails.get(run_id)
        return None if held is None else held[0]

    def pop(self, run_id: str, default: Tail | None = None) -> Tail | None:
        held = self._tails.pop(run_id, None)
        if held is None:
            return default
        self.total -= held[1]
        return held[0]

    def extend(self, run_id: str, carry_from: int, new: Tail) -> None:
        """Add the run's newly committed events; keep those from ``carry_from`` on, within
        the count and byte budgets (the newest are kept: they stay a contiguous suffix)."""
        tail = [p for p in (self.pop(run_id) or []) + new if p[0] >= carry_from][-CARRY_MAX_EVENTS:]
        size = sum(event_bytes(data) for _, data, _ in tail)
        cut = 0
        while size > self.run_bytes and cut < len(tail):
            size -= event_bytes(tail[cut][1])
            cut += 1
        if cut:
            tail = tail[cut:]
        self._tails[run_id] = (tail, size)
        self.total += size
        while self.total > self.shard_bytes and self._tails:
            _, (_, dropped) = self._tails.popitem(last=False)
            self.total -= dropped


HeartbeatRow = tuple[int, str | None]  # heartbeat time, details


class Heartbeats:
    """The last heartbeat of each pending activity, keyed (run id, scheduled event id)."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[int, HeartbeatRow]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._runs.values())

    def get(self, key: tuple[str, int]) -> HeartbeatRow | None:
        beats = self._runs.get(key[0])
        return None if beats is None else beats.get(key[1])

    def __setitem__(self, key: tuple[str, int], row: HeartbeatRow) -> None:
        self._runs.setdefault(key[0], {})[key[1]] = row

    def prune(self, state: MutableState) -> None:
        """Forget the heartbeats of the run's activities that are no longer pending."""
        beats = self._runs.get(state.run_id)
        if beats is None:
            return
        if not state.running:
            del self._runs[state.run_id]
            return
        for sid in [sid for sid in beats if str(sid) not in state.activities]:
            del beats[sid]
        if not beats:
            del self._runs[state.run_id]
