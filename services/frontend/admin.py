"""The API of namespaces and schedules: registration, retention, and the schedule rows.

These operations read and write PostgreSQL directly (no command goes through history):
a namespace is a row of ``namespaces``, a schedule a row of ``schedules`` (migration 0011)
that the owner of its shard fires (services/history/scheduler.py). Routes are in
``ADMIN_ROUTES``, served beside ``handlers.ROUTES`` by app.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import orjson

from services.common import db
from services.common.kafka import partition_for, workflow_key
from services.common.namespaces import (
    LIMIT_COLUMNS,
    NamespaceRegistry,
    NamespaceStore,
    format_duration_ms,
    parse_duration_ms,
)
from services.common.read_bound import DEFAULT_TIMEOUT_S, BoundedReads
from services.common.read_budgets import ReadBudgets
from services.common.schedules import (
    OverlapPolicy,
    ScheduleAction,
    ScheduleDefinition,
    ScheduleError,
    ScheduleSpec,
    iso_utc,
)
from services.common.validation import DOT_SEGMENTS, addressable
from services.common.visibility.reads import VisibilityReads
from services.common.visibility.sql import QueryError, stored_attributes

from . import validation as v
from .auth import authorize_everywhere
from .errors import (
    InvalidArgument,
    NamespaceAlreadyExists,
    NamespaceNotFound,
    RequestRefused,
    ScheduleAlreadyExists,
    ScheduleNotFound,
)
from .quotas import Quotas

Params = Mapping[str, str]
Answer = tuple[int, dict[str, Any]]

OK = 200
NEXT_TIMES_SHOWN = 5
MAX_SCHEDULE_ID = 200  # room left in a workflow id for "-" and the firing's time
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

NAMESPACES = "/api/v1/namespaces"
PREFIX = NAMESPACES + "/{namespace}"

# (method, full path, handler name = OpenAPI operationId), served like handlers.ROUTES.
ADMIN_ROUTES: list[tuple[str, str, str]] = [
    ("POST", NAMESPACES, "create_namespace"),
    ("GET", NAMESPACES, "list_namespaces"),
    ("GET", PREFIX, "describe_namespace"),
    ("PATCH", PREFIX, "update_namespace"),
    ("POST", PREFIX + "/schedules", "create_schedule"),
    ("GET", PREFIX + "/schedules", "list_schedules"),
    ("GET", PREFIX + "/schedules/{schedule_id}", "describe_schedule"),
    ("DELETE", PREFIX + "/schedules/{schedule_id}", "delete_schedule"),
    ("POST", PREFIX + "/schedules/{schedule_id}/pause", "pause_schedule"),
    ("POST", PREFIX + "/schedules/{schedule_id}/unpause", "unpause_schedule"),
    ("POST", PREFIX + "/schedules/{schedule_id}/trigger", "trigger_schedule"),
]


class AdminHandlers:
    def __init__(self, pool: db.Pool, registry: NamespaceRegistry, *, shards: int,
                 min_retention_ms: int = 60_000, clock: Callable[[], float] = time.time,
                 read_timeout: float = DEFAULT_TIMEOUT_S, budgets: ReadBudgets | None = None) -> None:
        self._pool = pool  # writes, and the reads that precede a write
        # Describes and lists: bounded, so a paused PostgreSQL answers 503 (read_bound.py).
        self._reads = BoundedReads(pool, read_timeout, budgets=budgets)
        self._store = NamespaceStore(pool)
        self._read_store = NamespaceStore(self._reads)
        self.registry = registry
        self._shards = shards  # used only if the cluster has not recorded its count
        self._min_retention_ms = min_retention_ms
        self._clock = clock
        self.quotas: Quotas | None = None  # the frontend's limits, told of a namespace's new ones

    # -- namespaces ------------------------------------------------------------------------------

    def _retention(self, body: Mapping[str, Any]) -> int | None:
        raw = body.get("retention")
        if raw is None:
            return None
        try:
            ms = parse_duration_ms(raw)
        except ValueError as exc:
            raise InvalidArgument(f"retention: {exc} (a bare number is days)", field="retention") from None
        if ms < self._min_retention_ms:
            raise InvalidArgument(f"retention must be at least {format_duration_ms(self._min_retention_ms)}",
                                  field="retention")
        return ms

    @staticmethod
    def _email(body: dict[str, Any]) -> str | None:
        email = v.optional_str(body, "owner_email", max_len=320)
        if email is not None and not _EMAIL.fullmatch(email):
            raise InvalidArgument("owner_email must be an email address", field="owner_email")
        return email

    async def create_namespace(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        name = v.namespace(body.get("name"))
        if name in DOT_SEGMENTS:  # dot segments: HTTP clients resolve them away (RFC 3986, 5.2.4)
            raise InvalidArgument(f"name {name!r} cannot be a namespace: in a path it is a dot segment, which"
                                  " HTTP clients remove, so no call of the SDK or the CLI would reach it", field="name")
        retention = self._retention(body)
        if retention is None:
            raise InvalidArgument("retention is required (such as 30d, 12h or 5m)", field="retention")
        description = v.optional_str(body, "description", max_len=10_000) or ""
        created = await self._store.create(name, description, self._email(body) or "", retention,
                                           v.optional_str(body, "request_id", max_len=200) or "")
        if created is None:
            raise NamespaceAlreadyExists(f"namespace {name!r} already exists", field="name")
        self.registry.add(name)
        return 201, created.to_json()

    async def list_namespaces(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return OK, {"namespaces": [n.to_json() for n in await self._read_store.list()]}

    async def describe_namespace(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        found = await self._read_store.get(ns)
        if found is None:
            raise not_found(ns)
        return OK, found.to_json()

    async def update_namespace(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        if body.get("limits") is not None:
            # The limits protect the other tenants: the namespace's own admin lifted its own.
            authorize_everywhere("setting a namespace's limits")
        description = v.optional_str(body, "description", max_len=10_000)
        if body.get("description") == "":
            description = ""
        updated = await self._store.update(ns, description=description, owner_email=self._email(body),
                                           retention_ms=self._retention(body), limits=_limits(body))
        if updated is None:
            raise not_found(ns)
        if self.quotas is not None:  # in force here at once; other frontends read it within REFRESH_S
            self.quotas.set_override(ns, updated.limits)
        return OK, updated.to_json()

    # -- schedules -------------------------------------------------------------------------------

    async def _shard_of(self, ns: str, schedule_id: str) -> int:
        recorded = await db.cluster_setting(self._pool, "shards")
        shards = int(recorded) if recorded is not None else self._shards
        return partition_for(workflow_key(ns, schedule_id), shards)

    async def create_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        sid = v.name(body, "schedule_id")
        if len(sid) > MAX_SCHEDULE_ID:
            raise InvalidArgument(f"schedule_id must be at most {MAX_SCHEDULE_ID} characters", field="schedule_id")
        v.checked(addressable, sid, "schedule_id")  # as a new workflow's id: no call could name a dot segment
        try:
            d = ScheduleDefinition.from_json(body)
        except ScheduleError as exc:
            raise InvalidArgument(str(exc), field=exc.field) from None
        row = await self.insert_schedule(ns, sid, d, v.optional_str(body, "request_id", max_len=200) or "")
        if row is None:
            raise ScheduleAlreadyExists(f"schedule {sid!r} already exists in namespace {ns!r}", field="schedule_id")
        return 201, schedule_json(row)

    async def insert_schedule(self, ns: str, sid: str, d: ScheduleDefinition,
                              request_id: str = "") -> asyncpg.Record | None:
        """Create schedule ``sid``, first firing at the spec's next time; None if it exists,
        unless this ``request_id`` created it (a create sent again: its row, as if new)."""
        d = await self.registered(ns, d)
        now = int(self._clock() * 1000)
        nominal = d.spec.next_after(now)
        if nominal is None:  # no time to fire at: the row would be stored with none (a 500 before)
            raise InvalidArgument(f"spec.cron {d.spec.cron!r} has no time after now: it would never fire",
                                  field="spec.cron")
        row: asyncpg.Record | None = await self._pool.fetchrow(
            "INSERT INTO schedules (namespace, schedule_id, shard_id, spec, action, overlap, catchup_window_ms,"
            " paused, note, next_nominal, next_fire_at, create_request_id) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb,"
            " $6, $7, $8, $9, $10, $11, NULLIF($12, '')) ON CONFLICT (namespace, schedule_id) DO NOTHING RETURNING *",
            ns, sid, await self._shard_of(ns, sid), json.dumps(d.spec.to_json()), json.dumps(d.action.to_json()),
            d.overlap.value, d.catchup_window_ms, d.paused, d.note, nominal, nominal + d.spec.jitter(sid, nominal),
            request_id)
        if row is None and request_id:
            row = await self._pool.fetchrow(
                "SELECT * FROM schedules WHERE namespace = $1 AND schedule_id = $2 AND create_request_id = $3",
                ns, sid, request_id)
        return row

    async def registered(self, ns: str, d: ScheduleDefinition) -> ScheduleDefinition:
        """``d`` with its action's search attributes checked against the namespace's registry
        (as a start's are) and stored as a start stores them."""
        given = d.action.search_attributes
        if given is None:
            return d
        try:
            values = stored_attributes(await VisibilityReads(self._pool).search_attributes(ns), json.loads(given))
        except QueryError as exc:
            raise InvalidArgument(str(exc), field="action.search_attributes") from None
        action = dataclasses.replace(d.action, search_attributes=orjson.dumps(values).decode())
        return dataclasses.replace(d, action=action)

    async def schedule_row(self, ns: str, sid: str) -> asyncpg.Record:
        """Schedule ``sid`` of ``ns`` as stored (ScheduleNotFound if there is none)."""
        return await self._row(ns, sid)

    async def _row(self, ns: str, sid: str) -> asyncpg.Record:
        row = await self._reads.fetchrow("SELECT * FROM schedules WHERE namespace = $1 AND schedule_id = $2", ns, sid)
        if row is None:
            raise ScheduleNotFound(f"schedule {sid!r} was not found in namespace {ns!r}", field="schedule_id")
        return row

    def _ids(self, path: Params) -> tuple[str, str]:
        return v.namespace(path["namespace"]), v.name({}, "schedule_id", value=path["schedule_id"])

    async def describe_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return OK, schedule_json(await self._row(*self._ids(path)))

    async def list_schedules(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        rows = await self._reads.fetch("SELECT * FROM schedules WHERE namespace = $1 ORDER BY schedule_id", ns)
        return OK, {"schedules": [schedule_json(r) for r in rows]}

    async def delete_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Delete the schedule. With a ``request_id``, the id is kept a day (deleted_schedules),
        so that the delete sent again after its answer was lost is answered ok, not 404."""
        ns, sid = self._ids(path)
        request_id = v.optional_str(dict(query), "request_id", max_len=200) or ""
        if await self._pool.fetchrow(
                "WITH gone AS (DELETE FROM schedules WHERE namespace = $1 AND schedule_id = $2 RETURNING schedule_id),"
                " kept AS (INSERT INTO deleted_schedules (namespace, schedule_id, request_id)"
                " SELECT $1, $2, $3 FROM gone WHERE $3 <> '' ON CONFLICT DO NOTHING)"
                " SELECT schedule_id FROM gone", ns, sid, request_id) is not None:
            if request_id:
                await self._pool.execute("DELETE FROM deleted_schedules WHERE deleted_at < now() - interval '1 day'")
            return OK, {}
        if request_id and await self._pool.fetchrow(
                "SELECT 1 FROM deleted_schedules WHERE namespace = $1 AND schedule_id = $2 AND request_id = $3",
                ns, sid, request_id) is not None:
            return OK, {}
        raise ScheduleNotFound(f"schedule {sid!r} was not found in namespace {ns!r}", field="schedule_id")

    async def pause_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns, sid = self._ids(path)
        note = v.optional_str(body, "note", max_len=10_000) or ""
        row = await self._pool.fetchrow(
            "UPDATE schedules SET paused = true, note = $3, updated_at = now()"
            " WHERE namespace = $1 AND schedule_id = $2 RETURNING *", ns, sid, note)
        if row is None:
            await self._row(ns, sid)
        return OK, schedule_json(row)

    async def unpause_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Resume from now: the times that passed while paused are not caught up."""
        ns, sid = self._ids(path)
        note = v.optional_str(body, "note", max_len=10_000) or ""
        spec = ScheduleSpec.stored(json.loads((await self._row(ns, sid))["spec"]))
        # None: a cron whose last time has passed, or one that no longer fires (cannot_fire).
        nominal = spec.next_after(int(self._clock() * 1000))
        row = await self._pool.fetchrow(
            "UPDATE schedules SET paused = false, note = $3, next_nominal = $4, next_fire_at = $5, updated_at = now()"
            " WHERE namespace = $1 AND schedule_id = $2 RETURNING *",
            ns, sid, note, nominal, None if nominal is None else nominal + spec.jitter(sid, nominal))
        if row is None:
            await self._row(ns, sid)
        return OK, schedule_json(row)

    async def trigger_schedule(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Start the schedule's workflow now (whatever the overlap policy, paused or not), at the
        scheduler's next round; the answer names the workflow it will start."""
        ns, sid = self._ids(path)
        cannot_fire = ScheduleSpec.stored(json.loads((await self._row(ns, sid))["spec"])).cannot_fire
        if cannot_fire is not None:  # the scheduler would drop the trigger: say so now
            raise RequestRefused("FailedPrecondition", f"schedule {sid!r}: {cannot_fire}")
        now = int(self._clock() * 1000)
        row = await self._pool.fetchrow(
            "UPDATE schedules SET triggers = array_append(triggers, $3::bigint), updated_at = now()"
            " WHERE namespace = $1 AND schedule_id = $2 RETURNING action", ns, sid, now)
        if row is None:
            await self._row(ns, sid)
        action = ScheduleAction.from_json(json.loads(row["action"]))
        return OK, {"workflow_id": action.workflow_id_of(sid, now), "scheduled_time": iso_utc(now)}


def _limits(body: Mapping[str, Any]) -> dict[str, float | None] | None:
    """The limits a PATCH sets (a merge patch: a limit left out is kept, null is the default)."""
    given = body.get("limits")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise InvalidArgument("limits must be an object", field="limits")
    out: dict[str, float | None] = {}
    for key, value in given.items():
        if key not in LIMIT_COLUMNS:
            raise InvalidArgument(f"limits has no {key!r} (it takes {', '.join(LIMIT_COLUMNS)})", field="limits")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
                                  or value > 1e9 or (key == "concurrent_polls" and value != int(value))):
            raise InvalidArgument(f"limits.{key} must be a positive number"
                                  + (" (whole)" if key == "concurrent_polls" else "") + " or null (the default)",
                                  field=f"limits.{key}")
        out[key] = value
    return out


def not_found(ns: str) -> NamespaceNotFound:
    return NamespaceNotFound(f"namespace {ns!r} is not registered (kadence namespace create {ns} ...)",
                             field="namespace")


def schedule_json(row: asyncpg.Record) -> dict[str, Any]:
    spec = ScheduleSpec.stored(json.loads(row["spec"]))
    upcoming: list[str] = []
    nominal = None if spec.cannot_fire is not None else row["next_nominal"]
    while nominal is not None and len(upcoming) < NEXT_TIMES_SHOWN and not row["paused"]:
        upcoming.append(iso_utc(nominal + spec.jitter(row["schedule_id"], nominal)))
        nominal = spec.next_after(nominal)
    return {
        "schedule_id": row["schedule_id"], "spec": spec.to_json(),
        "action": ScheduleAction.from_json(json.loads(row["action"])).to_json(),
        "overlap_policy": OverlapPolicy(row["overlap"]).value,
        "catchup_window": format_duration_ms(row["catchup_window_ms"]) if row["catchup_window_ms"] else "0s",
        "paused": row["paused"], "note": row["note"], "next_action_times": upcoming,
        "buffered": None if row["buffered"] is None else iso_utc(row["buffered"]),
        "pending_triggers": len(row["triggers"]), "last_workflow_id": row["last_workflow_id"],
        "recent_actions": json.loads(row["recent"]), "actions_started": row["fired"],
        "actions_skipped": row["skipped"], "created_time": row["created_at"].isoformat(),
        "updated_time": row["updated_at"].isoformat(), "invalid_schedule_error": spec.cannot_fire,
    }
