"""The layout of a run's snapshot (``executions.state``, JSON) and its upgrade.

History writes a run's mutable state as canonical JSON (``MutableState.dumps``) in every
batch that changes it, and reads it back when the run is not in its cache. The snapshot
names its layout (``"version"``); :func:`upgrade` brings a snapshot of any earlier layout
to the current one, so reading never guesses. Only history reads the snapshot: the
frontend answers from columns and from the summary history writes beside it.

Layouts:

* 0 (no ``"version"``: every build before issue 16): a pending activity has
  ``cancel_requested_event_id`` only once cancellation was asked; a workflow task not yet
  started has no ``ran_ahead_id``; a user timer is named by its key only; an update request
  known from history only has no ``seq``.
* 1: every object has all its fields (the slotted dataclasses of state.py); a timer
  carries its ``timer_id``.
* 2: the workflow task has ``transient`` and ``identity``; the run has
  ``wt_transient_failures`` and ``wt_transient_failure`` (a failing task's attempts kept out
  of history, transient.py), ``wt_last_failure`` and ``search_attributes``. The upgrade adds
  the first four with what a layout-1 build meant (no transient attempts); the last two only
  the fold knows, so a layout-1 snapshot is rebuilt from history (``predates``).
* 3: the run has ``earlier_updates`` (the update ids earlier runs of its chain accepted,
  carried by a continue-as-new); the upgrade gives an earlier run none.
* 4: the run has ``terminate_reason``. The upgrade gives it null to a run not terminated;
  a terminated run's reason only its history knows, so its snapshot is rebuilt
  (``predates``).
* 5: the run has ``trace_context`` (its W3C trace headers, run_trace.py). The upgrade gives
  an earlier run none: its untraced work starts traces of its own, as before.

A snapshot that lacks top-level fields of the current state (written by a build before the
fold kept them) is upgraded all the same; ``MutableState.predates`` then tells the store to
rebuild it from history, which alone knows those fields' values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

SNAPSHOT_VERSION = 5


def _v0_to_v1(s: dict[str, Any]) -> dict[str, Any]:
    activities = s.get("activities")
    if activities:
        s["activities"] = {sid: {"cancel_requested_event_id": 0, **a} for sid, a in activities.items()}
    timers = s.get("timers")
    if timers:
        s["timers"] = {tid: {**t, "timer_id": tid} for tid, t in timers.items()}
    wt = s.get("wt")
    if wt is not None:
        s["wt"] = {"handed_time": 0, "ran_ahead_id": 0, **wt}
    requests = s.get("update_requests")
    if requests:
        s["update_requests"] = {uid: {"seq": 0, **r} for uid, r in requests.items()}
    return s


def _v1_to_v2(s: dict[str, Any]) -> dict[str, Any]:
    wt = s.get("wt")
    if wt is not None:
        s["wt"] = {"transient": False, "identity": "", **wt}
    s.setdefault("wt_transient_failures", 0)
    s.setdefault("wt_transient_failure", None)
    return s


def _v2_to_v3(s: dict[str, Any]) -> dict[str, Any]:
    s.setdefault("earlier_updates", {})
    return s


def _v3_to_v4(s: dict[str, Any]) -> dict[str, Any]:
    if s.get("status") != "Terminated":
        s.setdefault("terminate_reason", None)
    return s


def _v4_to_v5(s: dict[str, Any]) -> dict[str, Any]:
    s.setdefault("trace_context", {})
    return s


# Each step takes a snapshot of layout i to layout i + 1.
_STEPS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (_v0_to_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4,
                                                                 _v4_to_v5)
assert len(_STEPS) == SNAPSHOT_VERSION


class SnapshotTooNew(RuntimeError):
    """A snapshot written by a later build than this one (a rollback): never guessed at. Not a
    bad command (the shard does not dead-letter on it): the shard stops, loudly."""


def version_of(snapshot: Mapping[str, Any]) -> int:
    return int(snapshot.get("version", 0))


def upgrade(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The decoded ``snapshot`` in the current layout (changed in place when older)."""
    version = version_of(snapshot)
    if version == SNAPSHOT_VERSION:
        return snapshot
    if version > SNAPSHOT_VERSION:
        raise SnapshotTooNew(f"snapshot layout {version} is newer than this build's ({SNAPSHOT_VERSION})")
    for step in _STEPS[version:]:
        snapshot = step(snapshot)
    snapshot["version"] = SNAPSHOT_VERSION
    return snapshot
