"""Registered namespaces: their rows in PostgreSQL (migration 0011) and a cached set of names.

A namespace is registered with a retention period: closed runs older than it are deleted
by the retention job (services/history/retention.py). Requests to a namespace that is not
registered are refused: 404 ``NamespaceNotFound`` by the frontend, a dead letter by history.

Both ask ``NamespaceRegistry``: a set of the registered names kept in memory, read again
from PostgreSQL when a name is not in it, one read at a time, so a caller cycling through
made-up names costs no read each and a known name costs a set lookup. A frontend reads at
most every ``MISS_READ_INTERVAL_S`` for every name (a miss waits for the next) and believes a
miss for ``negative_ttl`` per name. History believes none: a record naming a name not known is
looked up in a read that started after its batch began (so a namespace created before the
record was written is never refused), shared by every such record of the batch and of the
process's other shards' batches begun before it: one read per batch at most, and no wait
for an interval, which would stall the shard. Namespaces are never deleted, so a name once
found stays valid.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.common.read_bound import Reads
from services.common.validation import MAX_DURATION_MS

DEFAULT = "default"
NEGATIVE_TTL_S = 1.0  # how long "not registered" is believed before PostgreSQL is asked again
# On a frontend, at most one read of the names per this interval, whatever the misses: a caller
# cycling through made-up names must not make each call a read of the table (a miss waits).
MISS_READ_INTERVAL_S = 0.1
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d|w)?\s*")


class NamespaceState(enum.Enum):
    REGISTERED = "Registered"


def parse_duration_ms(value: object, *, bare_unit: str = "d") -> int:
    """A duration given as ``30d``, ``12h``, ``90m``, ``45s``, ``500ms``, ``2w`` or a bare number
    (of ``bare_unit``: days for retention). Raises ValueError naming the accepted forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount, unit = value, bare_unit
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        amount, unit = int(m.group(1)), m.group(2) or bare_unit
    else:
        raise ValueError(f"{value!r} is not a duration such as 30d, 12h, 90m, 45s or 500ms")
    if amount <= 0:
        raise ValueError("a duration must be positive")
    # Bounded as every duration of a command is: a larger one overflowed PostgreSQL's bigint (500).
    if amount * _UNITS_MS[unit] > MAX_DURATION_MS:
        raise ValueError(f"a duration must be at most {MAX_DURATION_MS // _UNITS_MS['d']}d")
    return amount * _UNITS_MS[unit]


def format_duration_ms(ms: int) -> str:
    """The shortest exact form of ``ms`` that ``parse_duration_ms`` reads back (30d, 90m, 1500ms)."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class NamespaceLimits:
    """A namespace's limits on each frontend process (services/frontend/quotas.py). In a
    namespace's row None means the cluster's default; in the defaults, no limit."""

    rps: float | None = None
    concurrent_polls: int | None = None
    visibility_rps: float | None = None
    answer_rps: float | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record | dict[str, Any]) -> NamespaceLimits:
        return cls(row["rps_limit"], row["concurrent_poll_limit"], row["visibility_rps_limit"],
                   row["answer_rps_limit"])

    def over(self, defaults: NamespaceLimits) -> NamespaceLimits:
        """These overrides, with ``defaults`` for what they leave unset."""
        return NamespaceLimits(
            self.rps if self.rps is not None else defaults.rps,
            self.concurrent_polls if self.concurrent_polls is not None else defaults.concurrent_polls,
            self.visibility_rps if self.visibility_rps is not None else defaults.visibility_rps,
            self.answer_rps if self.answer_rps is not None else defaults.answer_rps)

    def to_json(self) -> dict[str, Any]:
        return {"rps": self.rps, "concurrent_polls": self.concurrent_polls, "visibility_rps": self.visibility_rps,
                "answer_rps": self.answer_rps}


LIMIT_COLUMNS = {"rps": "rps_limit", "concurrent_polls": "concurrent_poll_limit",
                 "visibility_rps": "visibility_rps_limit", "answer_rps": "answer_rps_limit"}


@dataclass(frozen=True)
class Namespace:
    name: str
    description: str
    owner_email: str
    retention_ms: int
    state: NamespaceState
    created_at: datetime
    updated_at: datetime
    limits: NamespaceLimits = NamespaceLimits()

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Namespace:
        return cls(row["name"], row["description"], row["owner_email"], int(row["retention_ms"]),
                   NamespaceState(row["state"]), row["created_at"], row["updated_at"], NamespaceLimits.from_row(row))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "owner_email": self.owner_email,
                "retention": format_duration_ms(self.retention_ms), "retention_ms": self.retention_ms,
                "state": self.state.value, "created_time": self.created_at.isoformat(),
                "updated_time": self.updated_at.isoformat(), "limits": self.limits.to_json()}


class NamespaceStore:
    """The namespaces table. Given a :class:`BoundedReads` (the frontend's reads), only
    ``get``, ``list`` and ``names`` may be called."""

    def __init__(self, pool: Reads) -> None:
        self._pool = pool

    async def create(self, name: str, description: str, owner_email: str, retention_ms: int,
                     request_id: str = "") -> Namespace | None:
        """The new namespace, or None if one of that name exists; but a namespace this
        ``request_id`` created already (a create sent again) is returned as if new."""
        row = await self._pool.fetchrow(
            "INSERT INTO namespaces (name, description, owner_email, retention_ms, create_request_id)"
            " VALUES ($1, $2, $3, $4, NULLIF($5, '')) ON CONFLICT (name) DO NOTHING RETURNING *",
            name, description, owner_email, retention_ms, request_id)
        if row is None and request_id:
            row = await self._pool.fetchrow("SELECT * FROM namespaces WHERE name = $1 AND create_request_id = $2",
                                            name, request_id)
        return None if row is None else Namespace.from_row(row)

    async def get(self, name: str) -> Namespace | None:
        row = await self._pool.fetchrow("SELECT * FROM namespaces WHERE name = $1", name)
        return None if row is None else Namespace.from_row(row)

    async def list(self) -> list[Namespace]:
        return [Namespace.from_row(r) for r in await self._pool.fetch("SELECT * FROM namespaces ORDER BY name")]

    async def update(self, name: str, *, description: str | None = None, owner_email: str | None = None,
                     retention_ms: int | None = None,
                     limits: dict[str, float | None] | None = None) -> Namespace | None:
        """Change the fields given (None: kept); the namespace, or None if there is none.
        ``limits``: the limits it names (keys of LIMIT_COLUMNS) set, None back to the default."""
        given = limits or {}
        sets = "".join(f", {column} = CASE WHEN ${5 + 2 * i} THEN ${6 + 2 * i} ELSE {column} END"
                       for i, column in enumerate(LIMIT_COLUMNS.values()))
        args: list[Any] = []
        for key, column in LIMIT_COLUMNS.items():
            value = given.get(key)
            args += [key in given, None if value is None else (int(value) if column == "concurrent_poll_limit"
                                                               else float(value))]
        row = await self._pool.fetchrow(
            "UPDATE namespaces SET description = COALESCE($2, description),"
            " owner_email = COALESCE($3, owner_email), retention_ms = COALESCE($4, retention_ms)" + sets +
            ", updated_at = now() WHERE name = $1 RETURNING *", name, description, owner_email, retention_ms, *args)
        return None if row is None else Namespace.from_row(row)

    async def limits(self) -> dict[str, NamespaceLimits]:
        """The namespaces that override any of the cluster's default limits, with their overrides."""
        rows = await self._pool.fetch(
            "SELECT name, " + ", ".join(LIMIT_COLUMNS.values()) + " FROM namespaces WHERE "
            + " OR ".join(f"{column} IS NOT NULL" for column in LIMIT_COLUMNS.values()))
        return {r["name"]: NamespaceLimits.from_row(r) for r in rows}

    async def names(self) -> set[str]:
        return {r["name"] for r in await self._pool.fetch("SELECT name FROM namespaces")}


class NamespaceRegistry:
    """Which namespaces are registered: a set in memory, refreshed from PostgreSQL on a miss."""

    def __init__(self, pool: Reads, *, negative_ttl: float = NEGATIVE_TTL_S, miss_read_interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``miss_read_interval``: at most one read of the names per this interval, whatever the
        misses (MISS_READ_INTERVAL_S on a frontend; 0 in history's intake, whose reads are
        bounded by its batches)."""
        self._store = NamespaceStore(pool)
        self._negative_ttl = negative_ttl
        self._miss_read_interval = miss_read_interval
        self._clock = clock
        self.known: set[str] = set()
        self._unknown_until: dict[str, float] = {}
        self._reading: asyncio.Task[None] | None = None  # the read of the names under way
        self._read_started = float("-inf")  # when it (or the last one) started, on the loop's clock
        self.reads = 0  # times PostgreSQL was asked (for tests)

    def add(self, name: str) -> None:
        """A namespace this process has just created: known from now on."""
        self.known.add(name)
        self._unknown_until.pop(name, None)

    async def is_registered(self, name: str, *, read_after: float | None = None) -> bool:
        """Whether ``name`` is registered. ``read_after`` (on the event loop's clock): a name
        not known is looked up in a read of the names that started then or later, with no
        belief in a miss (history's intake gives when its batch began: a namespace created
        before the batch's records were written is in such a read). None: from now, and a
        miss is believed for ``negative_ttl``."""
        if name in self.known:
            return True
        if read_after is not None:
            await self._read_since(read_after)
            return name in self.known
        now = self._clock()
        if self._unknown_until.get(name, 0.0) > now:
            return False
        await self._read_since(asyncio.get_running_loop().time())
        if name in self.known:
            self._unknown_until.pop(name, None)
            return True
        if len(self._unknown_until) > 10_000:  # a caller trying many names must not grow it without bound
            self._unknown_until.clear()
        self._unknown_until[name] = now + self._negative_ttl
        return False

    async def _read_since(self, arrived: float) -> None:
        """Wait for a read of the names that started at ``arrived`` or later (a namespace
        created before the miss is then seen), sharing it with the misses meanwhile, and
        starting one at most every ``miss_read_interval``."""
        loop = asyncio.get_running_loop()
        while True:
            reading = self._reading
            if reading is not None:
                await asyncio.shield(reading)  # a caller that goes away leaves the read to the others
                if self._read_started >= arrived:
                    return
                continue
            if self._read_started >= arrived:
                return  # one started since this miss, and it is over
            wait = self._read_started + self._miss_read_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._read_started = loop.time()
            self._reading = task = loop.create_task(self._read())
            # Its error reaches the callers waiting; retrieved here too in case they all went away.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _read(self) -> None:
        try:
            self.reads += 1
            self.known |= await self._store.names()
        finally:
            self._reading = None
