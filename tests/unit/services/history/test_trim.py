"""Which kadence.requests records the trimmer may delete (services/history/trim.py)."""

from __future__ import annotations

from services.history.trim import KeepWindow


def test_without_a_keep_window_records_below_the_stored_offset_go_but_the_one_before_it() -> None:
    window = KeepWindow(keep_s=0)
    assert window.bounds(0.0, {0: 10, 1: 1, 2: 0}) == {0: 9}


def test_a_record_goes_only_once_its_shard_moved_past_it_keep_s_ago() -> None:
    window = KeepWindow(keep_s=600)
    assert window.bounds(0.0, {0: 10}) == {}
    assert window.bounds(300.0, {0: 50}) == {}
    assert window.bounds(600.0, {0: 80}) == {0: 9}  # what was stored 600 s ago
    assert window.bounds(700.0, {0: 90}) == {0: 9}  # 300 s's 50 is not 600 s old yet
    assert window.bounds(900.0, {0: 95}) == {0: 49}
    assert window.bounds(1200.0, {0: 99}) == {0: 79}


def test_never_past_the_offset_stored_now() -> None:
    """An operator's rewind (resume.py) stores a lower offset than the one seen before."""
    window = KeepWindow(keep_s=60)
    window.bounds(0.0, {0: 100, 1: 100})
    assert window.bounds(60.0, {0: 5, 1: 200}) == {0: 4, 1: 99}


def test_a_partition_not_seen_keep_s_ago_is_left_alone() -> None:
    window = KeepWindow(keep_s=60)
    window.bounds(0.0, {0: 100})
    assert window.bounds(60.0, {0: 100, 1: 100}) == {0: 99}
