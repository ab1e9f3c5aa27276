"""The audit's pure part: fold each run's published events and check what the log says.

No I/O here. :class:`RunAudit` takes one run's events in the order they were read from
``kadence.history`` and folds them through :func:`services.history.state.apply` (the
one fold of the history service, never a copy), checking on the way:

* event ids are dense from 1: an id past the next expected one is held until the
  missing ones arrive, and whatever is still missing at the end is a gap;
* at-least-once publication repeats records: a repeat identical to the event already
  seen is a harmless duplicate delivery, a repeat that differs is a conflict;
* each event's ``hash`` chains to the previous event's (services.common.chain),
  recomputed from the event's bytes as written when they are given, so runs written
  under an older schema version verify as they were sealed.

:func:`compare_run` then checks the folded run against what PostgreSQL holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kadence_protocol import avro
from services.common import chain
from services.history.errors import HistoryCorrupted
from services.history.snapshot import upgrade
from services.history.state import MutableState, apply, events_only

Event = dict[str, Any]

# Kinds of divergence, as reported.
GAP = "gap"
CONFLICTING_DUPLICATE = "conflicting-duplicate"
CHAIN_BREAK = "chain-break"
FOLD_ERROR = "fold-error"
EVENT_MISMATCH = "event-mismatch"
MISSING_IN_POSTGRES = "missing-in-postgres"
MISSING_ON_TOPIC = "missing-on-topic"
STATE_MISMATCH = "state-mismatch"
POSTGRES_CHAIN_BREAK = "postgres-chain-break"


@dataclass(frozen=True)
class RunKey:
    namespace: str
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class Divergence:
    """One thing that does not agree, about one run."""

    run: RunKey
    kind: str
    detail: str
    event_id: int | None = None

    def __str__(self) -> str:
        at = f" at event {self.event_id}" if self.event_id is not None else ""
        return (f"{self.run.namespace}/{self.run.workflow_id} run {self.run.run_id}: "
                f"{self.kind}{at}: {self.detail}")


@dataclass
class RunAudit:
    """One run's events folded as they are read, with what was found wrong so far."""

    run: RunKey
    state: MutableState = field(init=False)
    events: dict[int, Event] = field(default_factory=dict)   # by id, the first delivery of each
    written: dict[int, bytes] = field(default_factory=dict)  # by id, its HistoryEvent encoding as written
    pending: dict[int, Event] = field(default_factory=dict)  # ids past a gap, held until it fills
    duplicates: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    fold_broken: bool = False

    def __post_init__(self) -> None:
        self.state = MutableState(namespace=self.run.namespace, workflow_id=self.run.workflow_id,
                                  run_id=self.run.run_id)

    @property
    def next_event_id(self) -> int:
        return self.state.next_event_id

    def add(self, event: Event, encoded: bytes | None = None) -> list[Divergence]:
        """Take one delivered event; return the divergences it revealed (also kept).

        ``encoded`` is the event's HistoryEvent encoding as written, from which its hash is
        checked; without it the event is re-encoded under the current schema for that.
        """
        found: list[Divergence] = []
        event_id = int(event["event_id"])
        seen = self.events.get(event_id) or self.pending.get(event_id)
        if seen is not None:
            if seen == event:
                self.duplicates += 1
            else:
                found.append(self._divergence(CONFLICTING_DUPLICATE, event_id,
                                              f"a second delivery differs in {_differing(seen, event)}"))
        elif event_id > self.next_event_id:
            self.pending[event_id] = event
            self._keep_written(event_id, encoded)
        elif event_id < 1:
            found.append(self._divergence(GAP, event_id, "event ids start at 1"))
        else:
            self._keep_written(event_id, encoded)
            found.extend(self._fold(event))
            while self.next_event_id in self.pending:
                found.extend(self._fold(self.pending.pop(self.next_event_id)))
        self.divergences.extend(found)
        return found

    def _keep_written(self, event_id: int, encoded: bytes | None) -> None:
        if encoded is not None:
            self.written[event_id] = encoded

    def encoding(self, event_id: int) -> bytes:
        """The event's HistoryEvent encoding as written; re-encoded under the current
        schema only when it was taken without its bytes."""
        written = self.written.get(event_id)
        return written if written is not None else avro.encode("HistoryEvent", self.events[event_id])

    def _fold(self, event: Event) -> list[Divergence]:
        found: list[Divergence] = []
        event_id = int(event["event_id"])
        if not chain.follows(self.state.last_hash, event, self.written.get(event_id)):
            found.append(self._divergence(CHAIN_BREAK, event_id,
                                          "hash does not follow the previous event's (changed, dropped or "
                                          "reordered event)"))
        self.events[event_id] = event
        if self.fold_broken:
            # The state is already wrong; keep ids moving so later events are still checked.
            self.state.next_event_id = event_id + 1
            self.state.last_hash = event.get("hash", "")
            return found
        try:
            written = self.written.get(event_id)
            apply(self.state, event, len(written) if written is not None else None)
        except (HistoryCorrupted, KeyError, TypeError, ValueError) as exc:
            self.fold_broken = True
            self.state.next_event_id = event_id + 1
            self.state.last_hash = event.get("hash", "")
            found.append(self._divergence(FOLD_ERROR, event_id, f"the fold rejects it: {exc}"))
        return found

    def finish(self) -> list[Divergence]:
        """At the end of the read: whatever is still held past a gap is reported."""
        found: list[Divergence] = []
        if self.pending:
            first_held = min(self.pending)
            found.append(self._divergence(
                GAP, self.next_event_id,
                f"events {self.next_event_id}..{first_held - 1} never arrived "
                f"({len(self.pending)} later event(s) held back)"))
        self.divergences.extend(found)
        return found

    def _divergence(self, kind: str, event_id: int | None, detail: str) -> Divergence:
        return Divergence(self.run, kind, detail, event_id)


class Replay:
    """Every run seen on the topic, each folded by its own :class:`RunAudit`."""

    def __init__(self) -> None:
        self.runs: dict[str, RunAudit] = {}
        # Per workflow, the run whose first event was read last: the current run.
        self.current: dict[tuple[str, str], str] = {}
        self.partition: dict[str, int] = {}
        self.records = 0

    def run(self, key: RunKey) -> RunAudit:
        audit = self.runs.get(key.run_id)
        if audit is None:
            audit = self.runs[key.run_id] = RunAudit(key)
        return audit

    def seed(self, key: RunKey, rows: Iterable[bytes]) -> None:
        """Fold events known from elsewhere (PostgreSQL ``history_events`` rows, each a
        HistoryEvent as written) before a run's first event on the topic."""
        audit = self.run(key)
        for data in rows:
            audit.add(avro.decode(data)[1], data)

    def add_record(self, record: dict[str, Any], partition: int = 0, *, data: bytes | None = None) -> list[Divergence]:
        """Take one decoded ``HistoryRecord``; ``data``, its bytes as read, lets the event's
        hash be checked against the encoding its writer hashed."""
        self.records += 1
        key = RunKey(record["namespace"], record["workflow_id"], record["run_id"])
        audit = self.run(key)
        event = record["event"]
        if event["event_id"] == 1 and 1 not in audit.events:
            self.current[(key.namespace, key.workflow_id)] = key.run_id
        self.partition.setdefault(key.run_id, partition)
        return audit.add(event, avro.history_event_encoding(data) if data is not None else None)

    def finish(self) -> list[Divergence]:
        found: list[Divergence] = []
        for audit in self.runs.values():
            found.extend(audit.finish())
        return found

    def divergences(self) -> list[Divergence]:
        return [d for audit in self.runs.values() for d in audit.divergences]


def compare_run(audit: RunAudit, stored_events: Sequence[bytes], snapshot: bytes | None) -> list[Divergence]:
    """Check one folded run against PostgreSQL: its ``history_events`` rows (by id order)
    and its ``executions.state`` snapshot (None when it has no row)."""
    found: list[Divergence] = []
    run = audit.run
    stored: dict[int, Event] = {}
    rows: dict[int, bytes] = {}
    for data in stored_events:
        try:
            event = avro.decode(data)[1]
        except avro.DecodeError as exc:
            found.append(Divergence(run, EVENT_MISMATCH, f"a history_events row does not decode: {exc}"))
            continue
        stored[int(event["event_id"])] = event
        rows[int(event["event_id"])] = data
    for event_id in sorted(audit.events.keys() | stored.keys()):
        mine, theirs = audit.events.get(event_id), stored.get(event_id)
        if theirs is None:
            found.append(Divergence(run, MISSING_IN_POSTGRES, "published but not in history_events", event_id))
        elif mine is None:
            found.append(Divergence(run, MISSING_ON_TOPIC, "in history_events but never published", event_id))
        elif mine != theirs:
            found.append(Divergence(run, EVENT_MISMATCH,
                                    f"history_events differs from kadence.history in {_differing(mine, theirs)}",
                                    event_id))
    ids = sorted(stored)
    broken = chain.first_break((stored[i] for i in ids), (rows[i] for i in ids))
    if broken is not None:
        found.append(Divergence(run, POSTGRES_CHAIN_BREAK, "the hash chain in history_events breaks", broken))
    if snapshot is None:
        found.append(Divergence(run, MISSING_IN_POSTGRES, "no executions row"))
    elif not audit.fold_broken:
        try:
            written = upgrade(json.loads(snapshot))
            stored_state = MutableState.from_snapshot(written)
        except (ValueError, TypeError) as exc:
            found.append(Divergence(run, STATE_MISMATCH, f"executions.state does not load: {exc}"))
        else:
            # The attempt bookkeeping of pending activities changes without events (see
            # state.ATTEMPT_FIELDS): no replay of the log can know it, so it is left out.
            theirs = events_only(json.loads(stored_state.dumps()))
            mine = events_only(json.loads(audit.state.dumps()))
            if MutableState.predates(written):
                # An earlier build wrote it, without the fields the fold has gained since
                # (the service rebuilds such a state when it loads it): compare the others.
                mine = {k: v for k, v in mine.items() if k in written}
                theirs = {k: v for k, v in theirs.items() if k in written}
            if theirs != mine:
                fields = _differing(mine, theirs)
                found.append(Divergence(run, STATE_MISMATCH,
                                        f"executions.state differs from the replayed state in {fields}"))
    return found


def _differing(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The top-level fields whose values differ, for a readable report."""
    names = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(names) if names else "nothing (equal)"
