"""The relay's task notices (services/history/notices.py): grouped per task partition, only
tasks, never blocking the relay, and dropped rather than queued when too many are out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.common.kafka import HISTORY, REPLIES, TASKS, Published
from services.common.matching.errors import MatchingUnavailableError
from services.common.matching.notices import TaskNotice, notices_from_json, notices_to_json
from services.history.notices import MatchingNotices


class FakeClient:
    def __init__(self, *, fail: bool = False, hold: asyncio.Event | None = None) -> None:
        self.sent: list[tuple[int, list[TaskNotice]]] = []
        self.fail = fail
        self.hold = hold
        self.closed = False

    async def notify_tasks(self, partition: int, notices: Sequence[TaskNotice], timeout: float = 1.0) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise MatchingUnavailableError("down")
        self.sent.append((partition, list(notices)))

    async def close(self) -> None:
        self.closed = True


def _notices(client: FakeClient, max_in_flight: int = 64) -> MatchingNotices:
    return MatchingNotices(client, max_in_flight=max_in_flight)  # type: ignore[arg-type]


async def test_tasks_are_noticed_per_partition_with_their_offsets_and_nothing_else() -> None:
    client = FakeClient()
    notices = _notices(client)
    records = [(TASKS, b"k1", b"t1", (("traceparent", b"x"),)), (REPLIES, b"r", b"reply", ()),
               (TASKS, b"k2", b"t2", ()), (HISTORY, b"h", b"event", ()), (TASKS, b"k3", b"t3", ())]
    where = [Published(TASKS, 1, 10), Published(REPLIES, 0, 5), Published(TASKS, 0, 7),
             Published(HISTORY, 0, 1), Published(TASKS, 1, 11)]
    notices.published(records, where)
    await asyncio.sleep(0)
    await notices.close()
    assert sorted(client.sent) == [(0, [TaskNotice(7, b"t2")]),
                                   (1, [TaskNotice(10, b"t1", (("traceparent", b"x"),)), TaskNotice(11, b"t3")])]
    assert notices.counts.sent == 2 and client.closed


async def test_failed_notices_are_counted_and_dropped() -> None:
    client = FakeClient(fail=True)
    notices = _notices(client)
    notices.published([(TASKS, b"k", b"t", ())], [Published(TASKS, 0, 1)])
    for _ in range(3):
        await asyncio.sleep(0)
    assert (notices.counts.sent, notices.counts.failed) == (0, 1)
    await notices.close()


async def test_past_the_in_flight_bound_notices_are_dropped_not_queued() -> None:
    hold = asyncio.Event()
    client = FakeClient(hold=hold)
    notices = _notices(client, max_in_flight=1)
    notices.published([(TASKS, b"k", b"t", ())], [Published(TASKS, 0, 1)])
    notices.published([(TASKS, b"k", b"u", ())], [Published(TASKS, 0, 2)])
    assert notices.counts.dropped == 1
    hold.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert client.sent == [(0, [TaskNotice(1, b"t")])]
    await notices.close()


def test_a_notice_survives_its_json_form() -> None:
    sent = [TaskNotice(3, b"\x00\x01avro", (("traceparent", b"00-ab"),)), TaskNotice(4, b"")]
    assert notices_from_json(notices_to_json(2, sent)) == (2, sent)
