"""The hand-over of published kadence.history records to the in-process visibility
projection: taken only as a run without a hole from the consumer's position, bounded."""

from __future__ import annotations

import pytest

from services.common.kafka import HISTORY, REQUESTS, Published
from services.visibility.handover import Handover

pytestmark = pytest.mark.timeout(10)


def _tell(handover: Handover, partition: int, offsets: range, topic: str = HISTORY) -> None:
    records = [(topic, b"k", f"v{o}".encode(), ()) for o in offsets]
    handover.published(records, [Published(topic, partition, o) for o in offsets])


def test_a_run_is_taken_only_from_the_position_without_a_hole() -> None:
    handover = Handover()
    _tell(handover, 0, range(15, 20))  # acknowledged first, though published after 10-14
    assert handover.take(0, 10) == []
    _tell(handover, 0, range(10, 15))
    _tell(handover, 1, range(3, 4))
    _tell(handover, 0, range(100, 101), topic=REQUESTS)  # not visibility's
    assert handover.take(0, 10) == [f"v{o}".encode() for o in range(10, 20)]
    assert not handover.waiting(0) and handover.waiting(1) and handover.end(0) == 20
    assert handover.take(1, 2) == []  # the record at 2 was not handed: the consumer fetches it


def test_a_take_stops_at_its_limit_and_the_next_goes_on_from_there() -> None:
    handover = Handover()
    _tell(handover, 0, range(0, 5))
    assert handover.take(0, 0, 3) == [b"v0", b"v1", b"v2"]
    assert handover.take(0, 3, 3) == [b"v3", b"v4"]
    assert handover._count == 0


def test_what_the_consumer_fetched_or_does_not_own_is_dropped() -> None:
    handover = Handover()
    _tell(handover, 0, range(0, 10))
    _tell(handover, 1, range(0, 5))
    handover.forget_below(0, 7)
    assert handover.has(0, 7) and not handover.has(0, 6)
    handover.keep_only([0])
    assert not handover.waiting(1)
    assert handover.take(0, 7) == [b"v7", b"v8", b"v9"]
    assert handover._count == 0


def test_at_most_max_pending_records_wait() -> None:
    handover = Handover(max_pending=4)
    _tell(handover, 0, range(0, 6))
    assert (handover.handed, handover.dropped, handover.end(0)) == (4, 2, 6)
    assert handover.take(0, 0) == [b"v0", b"v1", b"v2", b"v3"]
    _tell(handover, 0, range(6, 8))
    assert handover.take(0, 4) == []  # 4 and 5 were dropped: fetched, then 6 and 7 follow
    handover.forget_below(0, 6)
    assert handover.take(0, 6) == [b"v6", b"v7"]
