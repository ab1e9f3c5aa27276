"""Notices per destination (services/common/notice_queue.py): one request out at a time, the
notices made meanwhile together in the next, bounded in destinations and in waiting notices."""

from __future__ import annotations

import asyncio

import pytest

from services.common.notice_queue import NoticeQueue
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(10)


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()

    async def send(self, destination: str, notices: list[int]) -> None:
        self.sent.append((destination, notices))
        await self.release.wait()


async def test_a_notice_goes_at_once_and_those_made_while_it_is_out_go_together() -> None:
    sender = Sender()
    queue: NoticeQueue[str, int] = NoticeQueue(sender.send, max_destinations=4)
    queue.add("a", [1])
    await eventually(lambda: sender.sent == [("a", [1])], what="the first request")
    queue.add("a", [2])
    queue.add("a", [3, 4])
    queue.add("b", [5])  # another destination does not wait for a's
    await eventually(lambda: ("b", [5]) in sender.sent, what="b's request")
    sender.release.set()
    await eventually(lambda: not queue.in_flight, what="all sent")
    assert [s for s in sender.sent if s[0] == "a"] == [("a", [1]), ("a", [2, 3, 4])]
    assert queue.dropped == 0
    await queue.close()


async def test_past_the_bounds_notices_are_dropped() -> None:
    sender = Sender()
    queue: NoticeQueue[str, int] = NoticeQueue(sender.send, max_destinations=1, max_pending=2)
    queue.add("a", [1])
    await eventually(lambda: sender.sent, what="the first request")
    queue.add("b", [9])  # a second destination out: past max_destinations
    queue.add("a", [2, 3, 4])  # two may wait behind a's request
    assert queue.dropped == 2
    sender.release.set()
    await eventually(lambda: not queue.in_flight, what="all sent")
    assert sender.sent == [("a", [1]), ("a", [2, 3])]
    await queue.close()


async def test_close_stops_what_is_out() -> None:
    sender = Sender()
    queue: NoticeQueue[str, int] = NoticeQueue(sender.send, max_destinations=1)
    queue.add("a", [1])
    await eventually(lambda: sender.sent, what="the request out")
    await queue.close()
    assert not queue.in_flight
