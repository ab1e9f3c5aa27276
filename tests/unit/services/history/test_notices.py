"""A shard's task notices (services/history/notices.py): told at the commit, grouped per task
partition, only tasks, never blocking the shard, and dropped rather than queued when too many
are out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.common.kafka import HISTORY, REPLIES, TASKS, partition_for
from services.common.matching.errors import MatchingUnavailableError
from services.common.matching.notices import UNPUBLISHED, TaskNotice, notices_from_json, notices_to_json
from services.history.notices import MatchingNotices
from tests.helpers import eventually


class FakeClient:
    def __init__(self, *, fail: bool = False, hold: asyncio.Event | None = None) -> None:
        self.sent: list[tuple[int, list[TaskNotice]]] = []
        self.fail = fail
        self.hold = hold
        self.closed = False

    def partition_of_key(self, key: bytes) -> int:
        return partition_for(key, 4)

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


def _key_of(partition: int) -> bytes:
    return next(k for i in range(1000) if partition_for(k := f"default/q{i}".encode(), 4) == partition)


async def test_tasks_are_noticed_per_partition_of_their_key_unpublished_and_nothing_else() -> None:
    client = FakeClient()
    notices = _notices(client)
    k0, k1 = _key_of(0), _key_of(1)
    records = [(TASKS, k1, b"t1", (("traceparent", b"x"),)), (REPLIES, b"r", b"reply", ()),
               (TASKS, k0, b"t2", ()), (HISTORY, b"h", b"event", ()), (TASKS, k1, b"t3", ())]
    notices.committed(records)
    await asyncio.sleep(0)
    await notices.close()
    assert sorted(client.sent) == [
        (0, [TaskNotice(UNPUBLISHED, b"t2")]),
        (1, [TaskNotice(UNPUBLISHED, b"t1", (("traceparent", b"x"),)), TaskNotice(UNPUBLISHED, b"t3")])]
    assert notices.counts.sent == 2 and client.closed


async def test_failed_notices_are_counted_and_dropped() -> None:
    client = FakeClient(fail=True)
    notices = _notices(client)
    notices.committed([(TASKS, b"k", b"t", ())])
    for _ in range(3):
        await asyncio.sleep(0)
    assert (notices.counts.sent, notices.counts.failed) == (0, 1)
    await notices.close()


async def test_notices_made_while_one_is_out_go_together_and_past_the_bound_are_dropped() -> None:
    hold = asyncio.Event()
    client = FakeClient(hold=hold)
    notices = _notices(client, max_in_flight=1)
    k0, k1 = _key_of(0), _key_of(1)
    notices.committed([(TASKS, k0, b"t", ())])
    for _ in range(3):
        await asyncio.sleep(0)  # partition 0's request goes out
    notices.committed([(TASKS, k0, b"u", ())])  # it is out: this waits for it
    notices.committed([(TASKS, k0, b"v", ())])
    notices.committed([(TASKS, k1, b"w", ())])  # a second partition out would pass the bound
    assert notices.counts.dropped == 1
    hold.set()
    await eventually(lambda: len(client.sent) == 2, what="the second request")
    assert client.sent == [(0, [TaskNotice(UNPUBLISHED, b"t")]),
                           (0, [TaskNotice(UNPUBLISHED, b"u"), TaskNotice(UNPUBLISHED, b"v")])]
    await notices.close()


def test_a_notice_survives_its_json_form() -> None:
    sent = [TaskNotice(3, b"\x00\x01avro", (("traceparent", b"00-ab"),)), TaskNotice(UNPUBLISHED, b"")]
    assert notices_from_json(notices_to_json(2, sent)) == (2, sent)
