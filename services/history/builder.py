"""Add and apply, the two halves of a transition.

A :class:`Transition` is one run's change within a shard batch: every ``add``
builds a history event, folds it with :func:`state.apply`, and collects the
side effects that must be written in the same transaction (outbox rows, timer
rows). :meth:`Transition.close` freezes it into a :class:`Mutation` for the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, NamedTuple

from kadence_protocol import avro
from kadence_protocol.enums import EventType
from services.common import chain, kafka

from .limits import DEFAULT_HISTORY_LIMITS, HistoryLimits
from .state import Event, MutableState, apply

TimerRow = tuple[str, int, str, str, str, str, int, int]  # key, fire_at, ns, wid, run, kind, ref, attempt
Tail = list[tuple[int, bytes, Event]]  # (event_id, single-object encoding, event) of a run's newest events, contiguous

# A workflow task carries its events to the worker when they are at most this many
# and this large; otherwise the frontend reads them from PostgreSQL.
CARRY_MAX_EVENTS = 100
CARRY_MAX_BYTES = 256 * 1024


@cache
def _attributes_schema(event_type: str) -> tuple[frozenset[str], dict[str, Any]]:
    """The attribute names of ``event_type`` and their schema defaults (looked up once per
    type: every event added goes through event_attributes)."""
    schema = avro.schemas().current[avro.event_attributes_type(event_type)]
    return (frozenset(f["name"] for f in schema["fields"]),
            {f["name"]: f["default"] for f in schema["fields"] if "default" in f})


def event_attributes(event_type: str, values: dict[str, Any]) -> dict[str, Any]:
    """Attributes with every schema default filled in, so a live event equals its replayed copy."""
    fields, defaults = _attributes_schema(event_type)
    if not values.keys() <= fields:
        raise KeyError(f"{event_type} has no attribute(s) {sorted(values.keys() - fields)}")
    return {**defaults, **values}


_CLOSING = frozenset({EventType.WORKFLOW_EXECUTION_COMPLETED, EventType.WORKFLOW_EXECUTION_FAILED,
                      EventType.WORKFLOW_EXECUTION_TIMED_OUT,
                      EventType.WORKFLOW_EXECUTION_TERMINATED, EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
                      EventType.WORKFLOW_EXECUTION_CANCELED})


def timer_key(run_id: str, kind: str, ref: int | str) -> str:
    return f"{run_id}/{kind}/{ref}"


def history_records(namespace: str, workflow_id: str, run_id: str, encoded: Iterable[bytes],
                    headers: tuple[tuple[str, bytes], ...] = ()) -> list[OutboxMessage]:
    """The audit records (kadence.history) of a run's events, from their stored encodings.

    A HistoryRecord is its three strings followed by the event's body: the encoding made
    when the event was added (the bytes ``history_events`` holds) is reused, not redone.
    The commit and a new owner's outbox recovery (store.py) both build them here.
    """
    key, prefix = _history_prefix(namespace, workflow_id, run_id)
    return [OutboxMessage(kafka.HISTORY, key, prefix + e[10:], headers) for e in encoded]


@lru_cache(maxsize=16384)
def _history_prefix(namespace: str, workflow_id: str, run_id: str) -> tuple[bytes, bytes]:
    """A run's kadence.history key and the HistoryRecord bytes before each event's body: the
    same for each of its batches (a run's commits come in a few batches close together)."""
    return (kafka.workflow_key(namespace, workflow_id),
            avro.header("HistoryRecord") + avro.string(namespace) + avro.string(workflow_id) + avro.string(run_id))


class OutboxMessage(NamedTuple):
    """One record for the relay to publish after commit."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class LocalTask(NamedTuple):
    """A task for matching in this process, handed over after commit instead of published.

    ``name`` is its record type (WorkflowTask or ActivityTask), ``record`` the record as
    it would be encoded, and ``events`` a workflow task's carried events as dicts. If the
    process dies before a worker starts it, history's re-dispatch publishes it again.
    ``updates``: a workflow task's update requests waiting as of the commit (set by the
    runner after it, from the batch's final state; None until then).
    """

    name: str
    record: dict[str, Any]
    events: tuple[Event, ...] | None = None
    headers: tuple[tuple[str, bytes], ...] = ()  # the trace headers its outbox record would carry
    traceparent: str | None = None  # the dispatch span of a traced hand-over (colocation.TracedTasks)
    updates: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Mutation:
    """Everything one run's transition writes, frozen for the store."""

    state: MutableState
    events: tuple[Event, ...]
    encoded_events: tuple[bytes, ...]
    outbox: tuple[OutboxMessage, ...]
    local_tasks: tuple[LocalTask, ...]
    timers_upsert: tuple[TimerRow, ...]
    timers_delete: tuple[str, ...]
    delete_all_timers: bool
    closed: bool
    current_changed: bool
    headers: tuple[tuple[str, bytes], ...] = ()  # the trace headers of its audit records


@dataclass
class Transition:
    state: MutableState
    now: int
    shard_id: int
    events: list[Event] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)  # events, single-object encoded
    outbox: list[OutboxMessage] = field(default_factory=list)
    local_tasks: list[LocalTask] = field(default_factory=list)
    timers_upsert: dict[str, TimerRow] = field(default_factory=dict)
    timers_delete: set[str] = field(default_factory=set)
    delete_all_timers: bool = False
    current_changed: bool = False
    # The state changed without an event (an activity's attempt bookkeeping, see
    # state.ATTEMPT_FIELDS): the snapshot must be written all the same.
    changed_without_events: bool = False
    # The run's close was told to its parent and children (children.on_close): once only.
    close_handled: bool = False
    headers: tuple[tuple[str, bytes], ...] = ()
    # The committed events since the run's last completed workflow task, when the
    # shard still holds them: a workflow task dispatched now carries them along.
    tail: Tail | None = None
    # Whether matching in this process takes tasks of (namespace, task queue) straight
    # from the commit (they are then not published); None: nothing takes them here.
    takes_tasks: Callable[[str, str], bool] | None = None
    # The run's history limits (limits.py): settle terminates a run past them.
    history_limits: HistoryLimits = DEFAULT_HISTORY_LIMITS
    # How long past its fire time history holds a user timer a worker runs ahead (timer_ahead.py).
    timer_ahead_grace_ms: int = 0

    def add(self, event_type: str, **attributes: Any) -> Event:
        """Build the next event of the run and fold it into the state."""
        return self._append(event_type, self.now, attributes)

    def copy(self, event: Event) -> Event:
        """Add a copy of another run's event (a reset, reset.py): its type, time and
        attributes, as the next event of this run, sealed on this run's chain."""
        return self._append(event["event_type"], event["event_time"], event["attributes"] or {})

    def _append(self, event_type: str, event_time: int, attributes: dict[str, Any]) -> Event:
        if self.state.wt is not None and self.state.wt.transient:
            from .transient import materialize  # imports this module

            materialize(self)  # its events first, at the ids reserved for them
        event = {
            "event_id": self.state.next_event_id,
            "event_time": event_time,
            "event_type": event_type,
            "attributes": event_attributes(event_type, attributes),
            "hash": "",  # sealed below: in place, so the encoding need not copy the event
        }
        event["hash"], encoded = chain.seal(self.state.last_hash, event)
        apply(self.state, event, len(encoded))
        self.events.append(event)
        self.encoded.append(encoded)
        return event

    def set_timer(self, kind: str, name: int | str, fire_at: int, attempt: int = 0, *, ref: int | None = None) -> None:
        """Arm (or re-arm) the run's timer ``kind/name``; ``ref`` defaults to ``name``."""
        s = self.state
        key = timer_key(s.run_id, kind, name)
        self.timers_delete.discard(key)
        if ref is None:
            ref = name if isinstance(name, int) else 0
        self.timers_upsert[key] = (key, fire_at, s.namespace, s.workflow_id, s.run_id, kind, ref, attempt)

    def delete_timer(self, kind: str, ref: int | str) -> None:
        key = timer_key(self.state.run_id, kind, ref)
        self.timers_upsert.pop(key, None)
        self.timers_delete.add(key)

    def publish(self, topic: str, key: bytes, record_name: str, record: dict[str, Any]) -> None:
        self.outbox.append(OutboxMessage(topic, key, avro.encode(record_name, record), self.headers))

    def _dispatch(self, name: str, task_queue: str, record: dict[str, Any],
                  events: tuple[Event, ...] | None = None) -> None:
        s = self.state
        if self.takes_tasks is not None and self.takes_tasks(s.namespace, task_queue):
            self.local_tasks.append(LocalTask(name, record, events, self.headers))
        else:
            self.publish(kafka.TASKS, kafka.task_queue_key(s.namespace, task_queue), name, record)

    def dispatch_workflow_task(self) -> None:
        s = self.state
        wt = s.wt
        assert wt is not None
        if wt.transient:
            from .transient import carried as transient_carried  # imports this module

            # Its worker reads the events before it from the store: it follows a failure.
            carried: Tail | None = transient_carried(self)
        else:
            carried = self._carried(s.carry_from, wt.scheduled_event_id)
        self._dispatch("WorkflowTask", s.task_queue, {
            "namespace": s.namespace, "workflow_id": s.workflow_id, "run_id": s.run_id,
            "task_id": f"{s.run_id}:wt:{wt.scheduled_event_id}:{wt.attempt}",
            "task_queue": s.task_queue, "workflow_type": s.workflow_type,
            "scheduled_event_id": wt.scheduled_event_id, "attempt": wt.attempt,
            "first_event_id": wt.scheduled_event_id if wt.transient else s.carry_from,
            "scheduled_time": wt.scheduled_time,
            "events": [data for _, data, _ in carried] if carried is not None else None,
        }, tuple(event for _, _, event in carried) if carried is not None else None)

    def _carried(self, first: int, last: int) -> Tail | None:
        """The events first..last, or None when they are not all in memory or too many."""
        if self.tail is None or last - first + 1 > CARRY_MAX_EVENTS:
            return None
        pool = self.tail + [(e["event_id"], data, e) for e, data in zip(self.events, self.encoded, strict=True)]
        chosen = [p for p in pool if first <= p[0] <= last]
        if len(chosen) != last - first + 1 or sum(len(data) for _, data, _ in chosen) > CARRY_MAX_BYTES:
            return None
        return chosen

    def dispatch_activity_task(self, scheduled_event_id: int) -> None:
        s = self.state
        act = s.activities[str(scheduled_event_id)]
        self._dispatch("ActivityTask", act.task_queue, {
            "namespace": s.namespace, "workflow_id": s.workflow_id, "run_id": s.run_id,
            "task_id": f"{s.run_id}:act:{scheduled_event_id}:{act.attempt}",
            "task_queue": act.task_queue, "workflow_type": s.workflow_type,
            "activity_id": act.activity_id, "activity_type": act.activity_type, "input": act.input,
            "scheduled_event_id": scheduled_event_id, "attempt": act.attempt,
            "schedule_to_close_timeout_ms": act.schedule_to_close_timeout_ms,
            "start_to_close_timeout_ms": act.start_to_close_timeout_ms,
            "heartbeat_timeout_ms": act.heartbeat_timeout_ms,
            "heartbeat_details": act.heartbeat_details, "scheduled_time": act.scheduled_time,
        })

    def close(self) -> Mutation:
        s = self.state
        history = history_records(s.namespace, s.workflow_id, s.run_id, self.encoded, self.headers)
        return Mutation(
            state=s,
            events=tuple(self.events),
            encoded_events=tuple(self.encoded),
            outbox=tuple(history + self.outbox),
            local_tasks=tuple(self.local_tasks),
            timers_upsert=tuple(self.timers_upsert.values()),
            timers_delete=tuple(self.timers_delete),
            delete_all_timers=self.delete_all_timers,
            closed=not s.running and any(e["event_type"] in _CLOSING for e in self.events),
            current_changed=self.current_changed,
            headers=self.headers,
        )
