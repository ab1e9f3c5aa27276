"""The visibility projection: what the events of ``kadence.history`` change in a run's
visibility row. Pure code, apart from Kafka, faust and PostgreSQL, so it is tested alone and
shared by the in-process consumer (``consumer.py``) and the faust app (``stream.py``).

A batch of records folds into one :class:`RunUpdate` per run. Every field of an update is
"latest wins" or set once (by the run's first event), and a partition delivers a run's
events in order and without holes from wherever it resumes, so applying a batch's update
to a row that already holds some of its events gives what applying only the newer ones
would: the store applies an update only when its ``last_event_id`` is beyond the row's.
Search attributes come from the start and from ``workflow.upsert_search_attributes``
(a marker, ``SEARCH_ATTRIBUTES_MARKER``); later values of a name replace earlier ones. The
memo is the start's (a JSON object; a run's memo never changes after its start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kadence_protocol import avro, exact_json
from kadence_protocol.enums import CLOSE_STATUS, EventType, RunStatus
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

log = logging.getLogger(__name__)


# The events that close a run, and the status each leaves (the protocol's table, by name).
CLOSING_EVENTS: Mapping[str, RunStatus] = {event.value: status for event, status in CLOSE_STATUS.items()}


@dataclass
class RunUpdate:
    """What a batch's events of one run change in its row. ``None``: left as the row has it."""

    namespace: str
    workflow_id: str
    run_id: str
    last_event_id: int
    newest_event_time: int  # of the newest event: the projection's delay is measured from it
    workflow_type: str | None = None
    task_queue: str | None = None
    start_time: int | None = None
    execution_time: int | None = None
    status: RunStatus | None = None  # set by the first event (Running) or a closing one
    close_time: int | None = None
    search_attributes: dict[str, Any] | None = None  # merged into the row's
    parent_workflow_id: str | None = None  # a child workflow's parent, from its start
    parent_run_id: str | None = None
    memo: dict[str, Any] | None = None  # from the start; set once

    def take(self, event: Mapping[str, Any]) -> None:
        """Fold one event of this run in."""
        event_id, event_time, kind = int(event["event_id"]), int(event["event_time"]), event["event_type"]
        if event_id > self.last_event_id:
            self.last_event_id, self.newest_event_time = event_id, event_time
        # The attributes are read only by the kinds of _ATTRIBUTE_READERS (shortcut.py relies on it).
        reader = _ATTRIBUTE_READERS.get(kind)
        if reader is not None:
            reader(self, event["attributes"] or {}, event_time)
        elif kind in CLOSING_EVENTS:
            self.status, self.close_time = CLOSING_EVENTS[kind], event_time

    def _started(self, attributes: Mapping[str, Any], event_time: int) -> None:
        self.workflow_type = attributes.get("workflow_type")
        self.task_queue = attributes.get("task_queue")
        self.start_time = self.execution_time = event_time
        self.parent_workflow_id = attributes.get("parent_workflow_id")
        self.parent_run_id = attributes.get("parent_run_id")
        if self.status is None:
            self.status = RunStatus.RUNNING
        self._merge_attributes(attributes.get("search_attributes"))
        self.memo = self._object(attributes.get("memo"), "memo")

    def _marker(self, attributes: Mapping[str, Any], event_time: int) -> None:
        if attributes.get("marker_name") == SEARCH_ATTRIBUTES_MARKER:
            self._merge_attributes(attributes.get("details"))

    def _merge_attributes(self, text: str | None) -> None:
        values = self._object(text, "search_attributes")
        if values is not None:
            self.search_attributes = {**(self.search_attributes or {}), **values}

    def _object(self, text: str | None, what: str) -> dict[str, Any] | None:
        """The JSON object in ``text``, or None (absent, or not an object: logged)."""
        if not text:
            return None
        try:
            values = exact_json.loads(text)
        except ValueError:  # json's error and orjson's (a subclass)
            values = None
        if not isinstance(values, dict):
            # Only a producer that bypassed the frontend's checks writes this; the run stays listable.
            log.warning("run %s: %s is not a JSON object; ignored", self.run_id, what)
            return None
        return values


# The event kinds whose attributes the fold reads, and what reads them. Every other kind
# changes a row by its id, time and type alone, so a reader may leave its attributes undecoded.
_ATTRIBUTE_READERS: Mapping[str, Callable[[RunUpdate, Mapping[str, Any], int], None]] = {
    EventType.WORKFLOW_EXECUTION_STARTED.value: RunUpdate._started,
    EventType.MARKER_RECORDED.value: RunUpdate._marker,
}
ATTRIBUTE_EVENTS: frozenset[str] = frozenset(_ATTRIBUTE_READERS)


class Skipped(Exception):
    """A record the projection cannot use (the reason is the message); it is logged and passed over."""


def decode(value: bytes | None) -> dict[str, Any]:
    """The HistoryRecord in a record's value, or Skipped."""
    if value is None:
        raise Skipped("a record with no value")
    try:
        name, record = avro.decode(value)
    except avro.DecodeError as exc:
        raise Skipped(f"unreadable record: {exc}") from None
    if name != "HistoryRecord":
        raise Skipped(f"a {name}, not a HistoryRecord")
    return record


def fold(records: Iterable[Mapping[str, Any]]) -> list[RunUpdate]:
    """One update per run from decoded HistoryRecords, in the order runs first appear."""
    updates: dict[tuple[str, str], RunUpdate] = {}
    for record in records:
        event = record["event"]
        key = (record["namespace"], record["run_id"])
        update = updates.get(key)
        if update is None:
            update = updates[key] = RunUpdate(record["namespace"], record["workflow_id"], record["run_id"],
                                              last_event_id=int(event["event_id"]),
                                              newest_event_time=int(event["event_time"]))
        update.take(event)
    return list(updates.values())
