"""The history shard's per-run memory stays within its budgets (services/history/memory.py)."""

from __future__ import annotations

from typing import Any

from services.history.builder import CARRY_MAX_EVENTS, Tail
from services.history.memory import Heartbeats, Tails, event_bytes
from services.history.state import MutableState


def _events(first: int, count: int, size: int) -> Tail:
    return [(i, b"x" * size, {"event_id": i}) for i in range(first, first + count)]


def _bytes(tail: Tail | None) -> int:
    return sum(event_bytes(data) for _, data, _ in tail or [])


def test_a_tail_never_exceeds_its_byte_budget_and_stays_a_contiguous_suffix() -> None:
    tails = Tails(run_bytes=64 * 1024, shard_bytes=1 << 30)
    next_id = 1
    for size in (10, 5000, 30_000, 200_000, 100, 7, 64 * 1024):
        for _ in range(5):
            tails.extend("r", 1, _events(next_id, 3, size))
            next_id += 3
            tail = tails.get("r")
            assert tail is not None
            assert _bytes(tail) <= 64 * 1024
            assert len(tail) <= CARRY_MAX_EVENTS
            ids = [i for i, _, _ in tail]
            assert ids == list(range(next_id - len(ids), next_id))  # the newest, no gap
    assert tails.total == _bytes(tails.get("r"))


def test_an_event_larger_than_the_budget_leaves_an_empty_tail() -> None:
    tails = Tails(run_bytes=1000, shard_bytes=1 << 30)
    tails.extend("r", 1, _events(1, 1, 5000))
    assert tails.get("r") == [] and tails.total == 0


def test_the_shard_budget_drops_the_least_recently_extended_tails() -> None:
    tails = Tails(run_bytes=1 << 20, shard_bytes=100_000)
    for n in range(50):
        tails.extend(f"r{n}", 1, _events(1, 2, 10_000))
        assert tails.total <= 100_000
        assert tails.total == sum(_bytes(tails.get(f"r{i}")) for i in range(50))
    assert "r49" in tails and "r0" not in tails
    tails.extend("r0", 1, _events(1, 1, 10))  # a dropped tail starts again from what is new
    assert [i for i, _, _ in tails.get("r0") or []] == [1]


def test_events_before_carry_from_go_and_pop_returns_the_bytes() -> None:
    tails = Tails()
    tails.extend("r", 1, _events(1, 10, 100))
    tails.extend("r", 8, _events(11, 2, 100))
    assert [i for i, _, _ in tails.get("r") or []] == [8, 9, 10, 11, 12]
    assert tails.pop("r") is not None and tails.total == 0 and tails.get("r") is None


def _state(running: bool, activities: dict[str, Any]) -> MutableState:
    return MutableState(run_id="r", status="Running" if running else "Completed", activities=activities)


def test_heartbeats_go_with_their_activity_and_their_run() -> None:
    beats = Heartbeats()
    beats[("r", 5)] = (1, '"a"')
    beats[("r", 9)] = (2, '"b"')
    beats.prune(_state(True, {"5": {}, "9": {}}))
    assert len(beats) == 2
    beats.prune(_state(True, {"9": {}}))
    assert beats.get(("r", 5)) is None and beats.get(("r", 9)) == (2, '"b"')
    beats.prune(_state(False, {}))
    assert len(beats) == 0
