"""Per-namespace limits of one frontend process: request rate, open long polls, visibility rate.

A namespace shares a cluster's shards with every other one, so a tenant flooding the API
would delay every tenant's commands (docs/security.md, "Sharing a cluster between tenants").
Each frontend process keeps, per namespace, a token bucket for the user API (starts, signals,
updates, queries, ...), a count of open long polls, and a token bucket for visibility queries
(list, count). A call over a limit is refused before its handler runs, so nothing of it
reaches Kafka: ``ResourceExhausted`` (429, ``Retry-After``). Worker answers (task answers,
heartbeats, query answers) have a bucket of their own at a far higher rate, so a tenant's
own flood of API calls never keeps its workers from finishing its runs, while a flood of
answers cannot write to the log every namespace shares without bound.

The limits are the cluster's defaults (``Settings``) unless the namespace's row overrides
them (migration 0019). The overrides are held in memory and read again from PostgreSQL in
the background at most every ``refresh_s``; a call never waits for that read. A change made
through this frontend is in force here at once, and a read that began before it does not
undo it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from services.common.namespaces import NamespaceLimits as Limits

from .errors import ResourceExhausted

log = logging.getLogger(__name__)

REFRESH_S = 5.0  # how stale another frontend's change of a namespace's limits may be here
BURST_S = 2.0  # a bucket holds this many seconds of its rate: a burst that size passes at once


class Kind(enum.Enum):
    """What a limited call counts against."""

    API = "rps"  # the user API's request rate
    POLLS = "concurrent_polls"  # long polls open at once
    VISIBILITY = "visibility_rps"  # list and count queries' rate
    ANSWERS = "answer_rps"  # worker answers' rate


# The calls a namespace's limits count, by handler name: through the API's routes, and the web
# UI's calls to the same handlers. Worker answers (task answers, heartbeats, query answers)
# count against a bucket of their own: a tenant's flood of starts must not keep its own
# workers from finishing its runs. Namespace and schedule administration is not counted, but
# a schedule's trigger is: it starts a run.
LIMITED: dict[str, Kind] = {
    **dict.fromkeys(("start", "start_batch", "signal_with_start", "signal", "terminate", "cancel", "reset",
                     "update", "query", "describe", "history", "result", "result_batch",
                     "list_search_attributes", "register_search_attribute", "trigger_schedule",
                     "describe_task_queue"), Kind.API),
    **dict.fromkeys(("list_workflows", "count_workflows"), Kind.VISIBILITY),
    **dict.fromkeys(("poll_workflow_tasks", "poll_activity_tasks"), Kind.POLLS),
    **dict.fromkeys(("complete_workflow_task", "fail_workflow_task", "timer_ahead_workflow_task", "respond_query",
                     "complete_activity_task", "fail_activity_task", "heartbeat_activity_task",
                     "cancel_activity_task", "answer_tasks"), Kind.ANSWERS),
}
# Calls sent together, counted once per item they carry (the body's list of that name), as
# the same items sent one by one would be.
PER_ITEM = {"start_batch": "starts", "result_batch": "waits", "answer_tasks": "answers"}


def limit_of(limits: Limits, kind: Kind) -> float | None:
    if kind is Kind.API:
        return limits.rps
    if kind is Kind.POLLS:
        return limits.concurrent_polls
    if kind is Kind.ANSWERS:
        return limits.answer_rps
    return limits.visibility_rps


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``. A call costing more than one token
    (a batch of starts) passes while any token is left and leaves the bucket in debt, so a
    batch larger than the burst is still served, and the calls after it wait its cost out."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * BURST_S)
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float, cost: float) -> float:
        """0.0 if the call passes (its cost taken), else the seconds until one would."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= cost
            return 0.0
        return (1.0 - self.tokens) / self.rate


OverridesReader = Callable[[], Awaitable[Mapping[str, Limits]]]


class Quotas:
    """The limits of one frontend process, by namespace."""

    def __init__(self, defaults: Limits, read_overrides: OverridesReader | None = None, *,
                 refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults
        self._read = read_overrides
        self._refresh_s = refresh_s
        self._clock = clock
        self._overrides: dict[str, Limits] = {}
        self._effective: dict[str, Limits] = {}
        self._buckets: dict[tuple[str, Kind], TokenBucket] = {}
        self._polls: Counter[str] = Counter()
        self._next_refresh = 0.0  # the first call reads the overrides
        self._refreshing: asyncio.Task[None] | None = None
        # Changes made here, by a count of them: a read that began before one must not undo it.
        self._changes = 0
        self._changed_at: dict[str, int] = {}
        self.refused: Counter[tuple[str, Kind]] = Counter()  # for /metrics and tests
        self.on_refused: Callable[[str, Kind], None] | None = None

    def limits(self, ns: str) -> Limits:
        found = self._effective.get(ns)
        if found is None:
            found = self._effective[ns] = self._overrides.get(ns, Limits()).over(self.defaults)
        return found

    def set_override(self, ns: str, override: Limits) -> None:
        """A namespace whose limits this process has just changed: in force at once here."""
        self._overrides[ns] = override
        self._changes += 1
        self._changed_at[ns] = self._changes
        self._forget(ns)

    def _forget(self, ns: str) -> None:
        self._effective.pop(ns, None)
        for kind in (Kind.API, Kind.VISIBILITY, Kind.ANSWERS):
            self._buckets.pop((ns, kind), None)

    # -- the checks ----------------------------------------------------------------------------

    def admit(self, ns: str, kind: Kind, cost: float = 1.0) -> None:
        """Take ``cost`` from the namespace's bucket of ``kind`` (API, VISIBILITY or ANSWERS), or
        raise ResourceExhausted saying when to try again."""
        now = self._clock()
        if now >= self._next_refresh:
            self._refresh(now)
        rate = limit_of(self.limits(ns), kind)
        if rate is None:
            return
        bucket = self._buckets.get((ns, kind))
        if bucket is None:
            bucket = self._buckets[(ns, kind)] = TokenBucket(rate, now)
        wait = bucket.take(now, cost)
        if wait:
            self._refuse(ns, kind, rate, wait)

    def charge(self, ns: str, kind: Kind, cost: float) -> None:
        """Take ``cost`` more from a bucket the call has passed (``admit`` with cost 0, before
        its body told what it costs), without refusing it: the bucket may go into debt."""
        bucket = self._buckets.get((ns, kind))
        if bucket is not None:
            bucket.tokens -= cost

    def poll_opened(self, ns: str) -> None:
        """Count a long poll of ``ns`` as open (``poll_closed`` when it ends), or raise
        ResourceExhausted when the namespace has its limit open already."""
        now = self._clock()
        if now >= self._next_refresh:
            self._refresh(now)
        cap = self.limits(ns).concurrent_polls
        if cap is not None and self._polls[ns] >= cap:
            # About when a poll ends on its own: the workers then find a slot.
            self._refuse(ns, Kind.POLLS, cap, 1.0)
        self._polls[ns] += 1

    def poll_closed(self, ns: str) -> None:
        left = self._polls[ns] - 1
        if left > 0:
            self._polls[ns] = left
        else:
            del self._polls[ns]

    def open_polls(self, ns: str) -> int:
        return self._polls[ns]

    def _refuse(self, ns: str, kind: Kind, limit: float, wait_s: float) -> None:
        self.refused[(ns, kind)] += 1
        if self.on_refused is not None:
            self.on_refused(ns, kind)
        shown = int(limit) if float(limit).is_integer() else limit
        what = {Kind.POLLS: "open long polls", Kind.API: "requests a second",
                Kind.VISIBILITY: "visibility queries a second", Kind.ANSWERS: "worker answers a second"}[kind]
        raise ResourceExhausted(
            f"namespace {ns!r} is over its limit of {shown} {what} on this frontend; retry after {wait_s:.2f}s",
            namespace=ns, limit=kind.value, limit_value=shown, retry_after_ms=math.ceil(wait_s * 1000))

    # -- the overrides -------------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        self._next_refresh = now + self._refresh_s
        if self._read is None or (self._refreshing is not None and not self._refreshing.done()):
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        assert self._read is not None
        began = self._changes
        try:
            found = dict(await self._read())
        except Exception:  # the limits in force stay; the next refresh tries again
            log.warning("reading the namespaces' limits failed; keeping those in force", exc_info=True)
            return
        for ns, at in list(self._changed_at.items()):
            if at > began:  # changed here while the read ran: the read may predate it
                found[ns] = self._overrides.get(ns, Limits())
            else:
                del self._changed_at[ns]
        for ns in set(found) | set(self._overrides):
            if found.get(ns) != self._overrides.get(ns):
                self._forget(ns)
        self._overrides = found

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            try:
                await self._refreshing
            except asyncio.CancelledError:
                pass
