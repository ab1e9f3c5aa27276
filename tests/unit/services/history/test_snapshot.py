"""The snapshot's layout (services/history/snapshot.py): versioned, and older layouts upgraded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kadence_protocol.enums import ActivityState, ChildState, EventType, UpdateStage
from services.history import snapshot
from services.history.state import _APPLY, MutableState, TimerInfo, events_only

pytestmark = pytest.mark.timeout(10)
# A run's snapshot exactly as the build before versioned snapshots wrote it (layout 0): a
# child run with activities (one retried and started again, one asked to cancel), timers (one
# whose id has slashes), children, a signal out, updates and update requests, a started task.
V0 = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_v0.json"
# The same run as the build before transient workflow tasks wrote it (layout 1).
V1 = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_v1.json"
# The same run as the build before earlier_updates wrote it (layout 2).
V2 = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_v2.json"


def test_the_unversioned_snapshot_of_the_build_before_loads_in_the_current_layout() -> None:
    data = V0.read_bytes()
    assert "version" not in orjson.loads(data)
    s = MutableState.loads(data)
    assert s.version == snapshot.SNAPSHOT_VERSION
    assert s.timers["odd/timer/id"] == TimerInfo(timer_id="odd/timer/id", started_event_id=8, fire_at=1_700_000_015_000)
    assert s.timers["t1"].timer_id == "t1"
    assert s.activities["5"].state is ActivityState.STARTED and s.activities["5"].attempt == 2
    assert s.activities["5"].cancel_requested_event_id == 0  # absent in layout 0: never asked
    assert s.activities["6"].cancel_requested_event_id == 16
    assert s.children["9"].state is ChildState.STARTED and s.children["11"].state is ChildState.INITIATED
    assert s.wt is not None and s.wt.started_event_id == 20 and s.wt.ran_ahead_id == 0
    assert s.update_requests["u1"].seq == 0 and s.update_requests["u1"].stage is UpdateStage.ACCEPTED
    assert s.update_requests["u1"].waiters[0].reply_to == "fe-1"
    assert s.update_requests["u3"].seq == 1 and s.updates["u2"].completed
    assert s.parent is not None and s.parent.workflow_id == "parent"
    assert not MutableState.predates(orjson.loads(s.dumps()))


def test_the_upgrade_changes_nothing_but_the_layout() -> None:
    before = orjson.loads(V0.read_bytes())
    after = orjson.loads(MutableState.loads(V0.read_bytes()).dumps())
    # What the build before knew is kept as it was, the added fields aside.
    # Top-level fields the state gained after the fixture was written come with their
    # defaults (and make MutableState.predates ask for a rebuild from history).
    assert after.keys() - before.keys() == {"version", "reset_from_run_id", "attempt", "retry_policy",
                                            "first_wt_backoff_ms", "backoff_pending", "wt_last_failure",
                                            "wt_transient_failures", "wt_transient_failure", "search_attributes",
                                            "earlier_updates", "terminate_reason", "trace_context"}
    assert {k: v for k, v in after.items() if k in before and k not in ("activities", "timers", "wt",
                                                                        "update_requests")} == \
        {k: v for k, v in before.items() if k not in ("activities", "timers", "wt", "update_requests")}
    for sid, act in before["activities"].items():
        assert {k: v for k, v in after["activities"][sid].items() if k in act} == act
    for tid, timer in before["timers"].items():
        assert after["timers"][tid] == {**timer, "timer_id": tid}
    assert events_only(after)["activities"].keys() == events_only(before)["activities"].keys()


def test_a_layout_1_snapshot_loads_with_no_transient_attempts_and_asks_for_a_rebuild() -> None:
    before = orjson.loads(V1.read_bytes())
    assert before["version"] == 1
    s = MutableState.loads(V1.read_bytes())
    assert s.version == snapshot.SNAPSHOT_VERSION
    assert s.wt is not None and not s.wt.transient and s.wt.identity == "" and s.wt.started_event_id == 20
    assert s.wt_transient_failures == 0 and s.wt_transient_failure is None
    upgraded = snapshot.upgrade(orjson.loads(V1.read_bytes()))
    # The last recorded failure and the merged search attributes only history knows.
    assert MutableState.predates(upgraded)
    assert {"wt_last_failure", "search_attributes"} == MutableState.__dataclass_fields__.keys() - upgraded.keys()
    after = orjson.loads(s.dumps())
    assert {k: v for k, v in after.items() if k in before and k not in ("wt", "version")} == \
        {k: v for k, v in before.items() if k not in ("wt", "version")}
    assert {k: v for k, v in after["wt"].items() if k in before["wt"]} == before["wt"]


def test_a_layout_2_snapshot_loads_with_no_earlier_updates_and_needs_no_rebuild() -> None:
    before = orjson.loads(V2.read_bytes())
    assert before["version"] == 2 and "earlier_updates" not in before
    upgraded = snapshot.upgrade(orjson.loads(V2.read_bytes()))
    assert upgraded["earlier_updates"] == {} and not MutableState.predates(upgraded)
    after = orjson.loads(MutableState.loads(V2.read_bytes()).dumps())
    assert after == {**before, "version": snapshot.SNAPSHOT_VERSION, "earlier_updates": {}, "terminate_reason": None,
                     "trace_context": {}}


def test_a_terminated_runs_snapshot_of_layout_3_is_rebuilt_for_its_reason() -> None:
    running = {**orjson.loads(V2.read_bytes()), "version": 3, "earlier_updates": {}}
    assert not MutableState.predates(snapshot.upgrade(dict(running)))
    terminated = snapshot.upgrade({**running, "status": "Terminated", "wt": None})
    # Only the run's WorkflowExecutionTerminated event knows the reason: never guessed at.
    assert "terminate_reason" not in terminated and MutableState.predates(terminated)


def test_a_current_snapshot_loads_back_to_the_same_bytes() -> None:
    s = MutableState.loads(V0.read_bytes())
    assert MutableState.loads(s.dumps()).dumps() == s.dumps()
    assert snapshot.upgrade(orjson.loads(s.dumps())) == orjson.loads(s.dumps())


def test_a_snapshot_of_a_later_layout_is_refused_not_guessed_at() -> None:
    with pytest.raises(snapshot.SnapshotTooNew):
        snapshot.upgrade({"version": snapshot.SNAPSHOT_VERSION + 1})


def test_every_event_type_has_its_fold() -> None:
    assert set(_APPLY) == set(EventType)


def test_a_layout_4_snapshot_has_no_trace_context_and_needs_no_rebuild() -> None:
    v4 = orjson.loads(MutableState(run_id="r").dumps())
    del v4["trace_context"]
    v4["version"] = 4
    s = MutableState.from_snapshot(snapshot.upgrade(v4))
    assert s.trace_context == {} and not MutableState.predates(orjson.loads(s.dumps()))
