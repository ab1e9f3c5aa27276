"""What the health endpoint says about the history shards owned by this process.

Each shard is *running*, *retrying* (one of its loops waits out an outage of PostgreSQL
or the broker, since some time, with the last error), *blocked* (a batch has been under
way for a second or more: a database or broker that neither answers nor fails, such as a
paused process, raises nothing to retry on) or *stopped* (a loop died or the shard lost
its ownership and awaits the rebalance). A shard is *stalled* when it is stopped, or
retrying or blocked for longer than the stall threshold (``KADENCE_STALL_AFTER_MS``): the
frontend's ``/health`` then answers 503.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any

from services.common.health import HealthReport


class ShardState(enum.Enum):
    RUNNING = "running"
    RETRYING = "retrying"
    BLOCKED = "blocked"
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True)
class ShardHealth:
    shard_id: int
    state: ShardState
    since: float | None  # retrying, blocked or stopped since (wall clock, seconds)
    last_error: str | None
    last_progress: float  # the last commit, or the start (wall clock, seconds)
    lag: int | None  # records on the partition not yet taken (log end - consumed), if known
    retrying_loops: tuple[str, ...] = ()

    def stalled(self, stall_after_s: float, now: float | None = None) -> bool:
        if self.state is ShardState.STOPPED:
            return True
        if self.state in (ShardState.RETRYING, ShardState.BLOCKED) and self.since is not None:
            return (now if now is not None else time.time()) - self.since >= stall_after_s
        return False

    def to_json(self, stall_after_s: float) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id, "state": self.state.value, "stalled": self.stalled(stall_after_s),
            "since": _iso(self.since), "last_error": self.last_error, "last_progress": _iso(self.last_progress),
            "lag": self.lag, "retrying_loops": list(self.retrying_loops),
        }


def report(shards: list[ShardHealth], stall_after_s: float, *, fatal: str | None = None) -> HealthReport:
    now = time.time()
    stalled = [s.shard_id for s in shards if s.stalled(stall_after_s, now)]
    details: dict[str, Any] = {"stalled_shards": stalled, "stall_after_s": stall_after_s,
                               "shards": [s.to_json(stall_after_s) for s in sorted(shards, key=lambda s: s.shard_id)]}
    if fatal is not None:
        details["fatal"] = fatal
    return HealthReport(healthy=not stalled and fatal is None, details=details)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
