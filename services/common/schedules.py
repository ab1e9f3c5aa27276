"""Schedules: what one is (spec, action, policies) and when it fires; pure, no I/O.

A spec is a cron expression (croniter) or an interval (every N, phase offset), either with
a time zone and a jitter. Its *nominal* times are what the spec says; each firing happens
at its nominal time plus a jitter drawn deterministically from (schedule id, nominal time),
so that any process computing it again gets the same answer. Each firing starts a workflow
with the id ``{schedule_id}-{nominal time, ISO 8601 UTC}`` and a request id made from the
same, so a firing applied twice starts one workflow.

The rows live in the ``schedules`` table (migration 0011); the frontend writes them
(services/frontend/admin.py), the owner of their shard fires them (services/history/scheduler.py).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from . import validation
from .namespaces import format_duration_ms, parse_duration_ms

DEFAULT_CATCHUP_WINDOW_MS = 60_000
# The shortest interval a new schedule takes: a cron expression's finest step (its seconds
# field). Each firing is a start no namespace limit holds back, and a 1 ms interval started
# a hundred workflows a second from one call, falling ever further behind.
MIN_INTERVAL_MS = 1_000
# The longest cron expression taken (every minute listed, 0,1,...,59, is 177 characters):
# croniter's time grows with the square of the length (25,000 characters took 66 s of one
# core to check, on the frontend's loop, and again at each scheduler round and describe).
MAX_CRON_CHARS = 200
# Month and weekday names, which may hold an R; any other R in a field is croniter's random value.
_CRON_NAMES = re.compile(r"(?i)jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun")
RECENT_KEPT = 10  # firings kept in a schedule's row for describe


class OverlapPolicy(enum.Enum):
    """What a firing does while the schedule's previous workflow is still running."""

    SKIP = "skip"                        # the firing is dropped
    BUFFER_ONE = "buffer_one"            # held until the previous closes (one at most; more are dropped)
    ALLOW_ALL = "allow_all"              # started anyway
    CANCEL_OTHER = "cancel_other"        # the previous is asked to cancel; this one held until it closes
    TERMINATE_OTHER = "terminate_other"  # the previous is terminated, then this one started

    @property
    def holds(self) -> bool:
        """Whether a firing waits (in the schedule's one-firing buffer) for the previous run to close."""
        return self in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.CANCEL_OTHER)


class ScheduleError(ValueError):
    """A schedule's definition is invalid; ``field`` names the part."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def iso_utc(ms: int) -> str:
    """``ms`` as ISO 8601 in UTC, to the second (``2026-12-06T08:40:05Z``), or the millisecond if it has any."""
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(text: str) -> int:
    """The inverse of :func:`iso_utc`."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def workflow_id_for(schedule_id: str, nominal_ms: int) -> str:
    return f"{schedule_id}-{iso_utc(nominal_ms)}"


def request_id_for(namespace: str, schedule_id: str, nominal_ms: int) -> str:
    return f"schedule:{namespace}:{schedule_id}:{nominal_ms}"


CRON_PREFIX = "cron-"


def cron_schedule_id(workflow_id: str) -> str:
    """The schedule a start with ``cron_schedule`` creates for ``workflow_id`` (README, Schedules)."""
    return CRON_PREFIX + workflow_id


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule fires: ``cron`` or ``interval_ms`` (with ``offset_ms``), in ``time_zone``."""

    cron: str | None = None
    interval_ms: int | None = None
    offset_ms: int = 0
    jitter_ms: int = 0
    time_zone: str = "UTC"
    # Why a stored spec no longer fires (None: it fires); see :meth:`stored`.
    cannot_fire: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> ScheduleSpec:
        if not isinstance(raw, Mapping):
            raise ScheduleError("spec must be an object with cron or interval", "spec")
        cron, interval = raw.get("cron"), raw.get("interval")
        if (cron is None) == (interval is None):
            raise ScheduleError("spec needs exactly one of cron (an expression) or interval (a duration)", "spec")
        tz = raw.get("time_zone") or "UTC"
        if not isinstance(tz, str):
            raise ScheduleError("spec.time_zone must be an IANA time zone name", "spec.time_zone")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"spec.time_zone {tz!r} is not a known time zone", "spec.time_zone") from None
        jitter = _duration(raw.get("jitter"), "spec.jitter", allow_zero=True)
        if cron is not None:
            if isinstance(cron, str) and len(cron) > MAX_CRON_CHARS:
                raise ScheduleError(f"spec.cron takes at most {MAX_CRON_CHARS} characters", "spec.cron")
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise ScheduleError(f"spec.cron {cron!r} is not a cron expression", "spec.cron")
            if _duration(raw.get("offset"), "spec.offset", allow_zero=True):
                # A cron expression says its own minutes and hours: an offset would be dropped.
                raise ScheduleError("spec.offset shifts an interval: a cron expression takes none", "spec.offset")
            return cls(cron=cron, jitter_ms=jitter, time_zone=tz)
        every = _duration(interval, "spec.interval")
        offset = _duration(raw.get("offset"), "spec.offset", allow_zero=True)
        if offset >= every:
            raise ScheduleError("spec.offset must be shorter than the interval", "spec.offset")
        return cls(interval_ms=every, offset_ms=offset, jitter_ms=jitter, time_zone=tz)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time_zone": self.time_zone, "jitter": format_duration_ms(self.jitter_ms)
                               if self.jitter_ms else "0s"}
        if self.cron is not None:
            out["cron"] = self.cron
        else:
            assert self.interval_ms is not None
            out["interval"] = format_duration_ms(self.interval_ms)
            out["offset"] = format_duration_ms(self.offset_ms) if self.offset_ms else "0s"
        return out

    @classmethod
    def stored(cls, raw: object) -> ScheduleSpec:
        """A spec read back from a schedule's row. A cron expression longer than
        MAX_CRON_CHARS was stored before that cap: it is kept as text and never given to
        croniter (whose time grows with the square of its length, on the frontend's loop and
        in the scheduler), so the schedule describes and lists, with no next times and
        ``cannot_fire`` saying why, and no longer fires."""
        cron = raw.get("cron") if isinstance(raw, Mapping) else None
        if not isinstance(raw, Mapping) or not isinstance(cron, str) or len(cron) <= MAX_CRON_CHARS:
            return cls.from_json(raw)
        # The rest of the spec (time zone, jitter, no offset) is checked as from_json checks it.
        rest = cls.from_json({**raw, "cron": "* * * * *"})
        return dataclasses.replace(rest, cron=cron, cannot_fire=(
            f"spec.cron is {len(cron)} characters, over the {MAX_CRON_CHARS} a cron expression takes (it was"
            " stored before that cap): this schedule no longer fires; delete it and create it again with a"
            " shorter expression"))

    @classmethod
    def given(cls, raw: object) -> ScheduleSpec:
        """A spec given for a new schedule: ``from_json``'s checks and those a stored spec,
        read back, is not held to (a row made before them still fires)."""
        spec = cls.from_json(raw)
        if spec.interval_ms is not None and spec.interval_ms < MIN_INTERVAL_MS:
            raise ScheduleError(f"spec.interval must be at least {format_duration_ms(MIN_INTERVAL_MS)}",
                                "spec.interval")
        if spec.cron is not None and any("r" in _CRON_NAMES.sub("", f).lower() for f in spec.cron.split()
                                         if not f.startswith("@")):
            # croniter draws an R afresh each time the expression is read: the times described
            # would not be those fired, nor one host's those of another.
            raise ScheduleError(f"spec.cron {spec.cron!r}: R (a random value) is not taken; give the value",
                                "spec.cron")
        return spec

    def next_after(self, ms: int) -> int | None:
        """The first nominal time strictly after ``ms``; None if the cron expression has none
        (a day no month has, a year field that has passed)."""
        if self.cannot_fire is not None:
            return None
        if self.interval_ms is not None:
            # Aligned on the epoch (plus the offset), so a restart keeps the same times.
            return ((ms - self.offset_ms) // self.interval_ms + 1) * self.interval_ms + self.offset_ms
        assert self.cron is not None
        # croniter is given the zone's wall clock (naive) and the zone is applied here: handed an
        # aware time it crossed a change of offset wrongly (New York, 15 March 2027: '30 1 * * *'
        # fired at 00:30 and 01:30; the day after autumn's change an hour late).
        zone = ZoneInfo(self.time_zone)
        wall = datetime.fromtimestamp(ms / 1000, tz=zone).replace(tzinfo=None)
        times = croniter(self.cron, wall)
        try:
            while True:
                nxt = times.get_next(datetime)
                # A wall time the clock skips (spring) is the instant an hour on, as the zone
                # reads it; one it shows twice (autumn) fires at its first showing, or at its
                # second when ``ms`` is already past the first.
                for fold in (0, 1):
                    at = int(nxt.replace(tzinfo=zone, fold=fold).timestamp() * 1000)
                    if at > ms:
                        return at
        except CroniterBadDateError:
            return None

    def jitter(self, schedule_id: str, nominal_ms: int) -> int:
        """The delay of the firing of ``nominal_ms``: the same wherever it is computed.

        At most the jitter and less than the gap to the next nominal time (as Temporal caps
        it): a longer delay would fire after its successor, which the scheduler, firing in
        order, then counted as missed once it was past the catch-up window."""
        if self.jitter_ms <= 0:
            return 0
        following = self.next_after(nominal_ms)
        limit = self.jitter_ms if following is None else min(self.jitter_ms, following - nominal_ms - 1)
        digest = hashlib.sha256(f"{schedule_id}/{nominal_ms}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (limit + 1)


@dataclass(frozen=True)
class ScheduleAction:
    """The workflow each firing starts."""

    workflow_type: str
    task_queue: str
    input: str | None = None  # JSON array text
    execution_timeout_ms: int = 0
    run_timeout_ms: int = 0
    workflow_task_timeout_ms: int = 10_000
    # Every firing starts a new run of this one workflow id (a cron start's schedule), instead
    # of a workflow of its own ({schedule_id}-{time}).
    workflow_id: str | None = None
    # Each run's memo and search attributes (JSON text of an object, or None), as a start's;
    # the search attributes checked against the namespace's registry when the schedule is made.
    memo: str | None = None
    search_attributes: str | None = None

    def workflow_id_of(self, schedule_id: str, nominal_ms: int) -> str:
        return self.workflow_id if self.workflow_id is not None else workflow_id_for(schedule_id, nominal_ms)

    @classmethod
    def from_json(cls, raw: object) -> ScheduleAction:
        if not isinstance(raw, Mapping):
            raise ScheduleError("action must be an object with workflow_type and task_queue", "action")
        names = {}
        for name in ("workflow_type", "task_queue"):
            value = raw.get(name)
            if not isinstance(value, str) or not value or len(value) > 1000:
                raise ScheduleError(f"action.{name} must be a non-empty string", f"action.{name}")
            names[name] = value
        args = raw.get("input")
        if args is not None and not isinstance(args, list):
            raise ScheduleError("action.input must be an array of arguments", "action.input")
        timeouts = {}
        for name, default in (("execution_timeout_ms", 0), ("run_timeout_ms", 0),
                              ("workflow_task_timeout_ms", 10_000)):
            value = raw.get(name, default)
            if type(value) is not int or value < 0:
                raise ScheduleError(f"action.{name} must be a non-negative integer", f"action.{name}")
            timeouts[name] = value
        try:
            text = None if args is None else json.dumps(args, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN or Infinity, which JSON has not
            raise ScheduleError("action.input holds a number JSON has not (NaN or Infinity)", "action.input") from None
        fixed = raw.get("workflow_id")
        if fixed is not None and (not isinstance(fixed, str) or not fixed or len(fixed) > 1000):
            raise ScheduleError("action.workflow_id must be a non-empty string", "action.workflow_id")
        return cls(names["workflow_type"], names["task_queue"], text, **timeouts, workflow_id=fixed,
                   memo=_object_text(raw.get("memo"), "action.memo"),
                   search_attributes=_object_text(raw.get("search_attributes"), "action.search_attributes"))

    def check(self) -> None:
        """ScheduleError unless every firing's start can pass the check history runs on it
        (names as a start's) and the row can hold the action: PostgreSQL's jsonb takes no NUL
        in a string, and the answers (orjson) no integer past 64 bits, which a start's JSON
        text would take. For a new schedule only: a row stored by an older build is read
        (from_json) and fired as it is."""
        for name in ("workflow_type", "task_queue", "workflow_id"):
            value = getattr(self, name)
            if value is not None:
                try:
                    validation.name(value, f"action.{name}")
                    if name != "workflow_type":
                        validation.addressable(value, f"action.{name}")
                except validation.Invalid as exc:
                    raise ScheduleError(exc.message, exc.field) from None
        for name in ("input", "memo", "search_attributes"):
            text = getattr(self, name)
            if text is not None:
                _storable(json.loads(text), f"action.{name}")

    def to_json(self) -> dict[str, Any]:
        out = {"workflow_type": self.workflow_type, "task_queue": self.task_queue,
               "input": None if self.input is None else json.loads(self.input),
               "execution_timeout_ms": self.execution_timeout_ms, "run_timeout_ms": self.run_timeout_ms,
               "workflow_task_timeout_ms": self.workflow_task_timeout_ms}
        if self.workflow_id is not None:
            out["workflow_id"] = self.workflow_id
        # Only when given: the action of a schedule made before them reads the same.
        if self.memo is not None:
            out["memo"] = json.loads(self.memo)
        if self.search_attributes is not None:
            out["search_attributes"] = json.loads(self.search_attributes)
        return out

    def start_record(self, namespace: str, schedule_id: str, nominal_ms: int) -> dict[str, Any]:
        """The StartWorkflowExecution command of the firing of ``nominal_ms``."""
        return {"namespace": namespace, "workflow_id": self.workflow_id_of(schedule_id, nominal_ms),
                "workflow_type": self.workflow_type, "task_queue": self.task_queue, "input": self.input,
                "execution_timeout_ms": self.execution_timeout_ms, "run_timeout_ms": self.run_timeout_ms,
                "workflow_task_timeout_ms": self.workflow_task_timeout_ms,
                "request_id": request_id_for(namespace, schedule_id, nominal_ms),
                "identity": f"schedule {schedule_id}", "reply_to": None, "memo": self.memo,
                "search_attributes": self.search_attributes}


@dataclass(frozen=True)
class ScheduleDefinition:
    """What a user gives to create a schedule."""

    spec: ScheduleSpec
    action: ScheduleAction
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window_ms: int = DEFAULT_CATCHUP_WINDOW_MS
    paused: bool = False
    note: str = ""

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ScheduleDefinition:
        spec = ScheduleSpec.given(body.get("spec"))
        action = ScheduleAction.from_json(body.get("action"))
        action.check()
        raw_overlap = body.get("overlap_policy", OverlapPolicy.SKIP.value)
        try:
            overlap = OverlapPolicy(raw_overlap)
        except ValueError:
            raise ScheduleError(f"overlap_policy must be one of {[p.value for p in OverlapPolicy]}",
                                "overlap_policy") from None
        catchup = body.get("catchup_window")
        window = DEFAULT_CATCHUP_WINDOW_MS if catchup is None else _duration(catchup, "catchup_window",
                                                                            allow_zero=True)
        paused = body.get("paused", False)
        if not isinstance(paused, bool):
            raise ScheduleError("paused must be true or false", "paused")
        note = body.get("note") or ""
        if not isinstance(note, str) or len(note) > 10_000:
            raise ScheduleError("note must be a string of at most 10000 characters", "note")
        try:
            validation.text(note, "note")
        except validation.Invalid as exc:
            raise ScheduleError(exc.message, exc.field) from None
        return cls(spec, action, overlap, window, paused, note)


# The most a schedule action's memo or search attributes take, as JSON (a start's memo is
# bounded by the payload limit the frontend and history check again on each start).
MAX_ACTION_OBJECT_BYTES = 256 * 1024


def _object_text(value: object, where: str) -> str | None:
    """A JSON object given in an action, as compact JSON text (None: not given)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ScheduleError(f"{where} must be a JSON object", where)
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise ScheduleError(f"{where} must be a JSON object", where) from None
    if len(text.encode()) > MAX_ACTION_OBJECT_BYTES:
        raise ScheduleError(f"{where} takes at most {MAX_ACTION_OBJECT_BYTES} bytes as JSON", where)
    return text


# The integers orjson writes (the frontend's answers): a schedule is answered as JSON.
_INTEGERS = range(-(2**63), 2**64)


def _storable(value: object, where: str) -> None:
    """ScheduleError naming ``where`` unless the JSON value ``value`` can be stored in the
    schedule's row (jsonb) and answered: no NUL or lone surrogate in a string or key, no
    integer past 64 bits, no NaN or Infinity."""
    if isinstance(value, str):
        try:
            validation.text(value, where, max_chars=len(value))
        except validation.Invalid as exc:
            raise ScheduleError(f"{exc.message} (a schedule's action is stored as JSON in PostgreSQL)", where) \
                from None
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if value not in _INTEGERS:
            raise ScheduleError(f"{where} holds an integer past 64 bits, which a schedule cannot keep", where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ScheduleError(f"{where} holds {value}, which is not a JSON number", where)
    elif isinstance(value, list):
        for item in value:
            _storable(item, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, where)


def _duration(value: object, where: str, *, allow_zero: bool = False) -> int:
    if value is None or (allow_zero and value in (0, "0", "0s")):
        if allow_zero:
            return 0
        raise ScheduleError(f"{where} is required", where)
    try:
        # A bare number here is seconds: "interval": 5 reads as five seconds.
        return parse_duration_ms(value, bare_unit="s")
    except ValueError as exc:
        raise ScheduleError(f"{where}: {exc}", where) from None


def due_times(spec: ScheduleSpec, schedule_id: str, next_nominal: int, now: int, catchup_window_ms: int,
              limit: int = 100, *, on_time_after: int | None = None) -> tuple[list[int], int, int | None]:
    """The nominal times from ``next_nominal`` whose firing (nominal plus jitter) is due by
    ``now``, how many of them fell outside the catch-up window (missed while nobody fired
    them), and the next nominal time after those (None: the spec has no more).

    ``on_time_after``: the time of the scheduler's previous look, when it has looked since it
    started; a firing due after it was not missed but is being fired on time, however short
    the window (one shorter than the looks' interval, 0s say, dropped every firing).

    At most ``limit`` are returned; the rest are taken by the next call.
    """
    due: list[int] = []
    missed = 0
    jumped = False
    t: int | None = next_nominal
    while t is not None and len(due) < limit:
        fire_at = t + spec.jitter(schedule_id, t)
        if fire_at > now:
            break
        if now - fire_at <= catchup_window_ms or (on_time_after is not None and fire_at > on_time_after):
            due.append(t)
        else:
            missed += 1
            if missed >= 10 * limit and not jumped:  # left alone for ages: jump to the window's start
                jumped = True
                start = spec.next_after(now - catchup_window_ms - spec.jitter_ms - 1)
                t = None if start is None else max(t, start)
                continue
        t = spec.next_after(t)
    return due, missed, t
