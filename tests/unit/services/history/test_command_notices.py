"""Command notices (services/common/command_notices.py): history offers a noticed command to
the shard's intake, which takes it only as the very next offset (a gap, a duplicate or a
record the fetch already brought is left alone); the frontend's side sends one request per
partition at a time, in offset order, and drops rather than queues without bound."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from aiokafka.structs import ConsumerRecord

from services.common import kafka
from services.common.colocation import KafkaCommands
from services.common.command_notices import (
    OWNER_RETRY_S,
    PATH,
    CommandNotice,
    HistoryOwners,
    NoticedCommands,
    NoticeFailed,
    NoticeOutcome,
    notices_from_json,
    notices_to_json,
    owner_address,
    owner_name,
)
from services.common.config import Settings
from services.common.supervision import Fatal
from services.history.http import HealthServer
from services.history.intake import Intake
from services.history.neighbours import HandedCommand
from services.history.service import HistoryService

pytestmark = pytest.mark.timeout(10)


class Consumer:
    def __init__(self) -> None:
        self.skipped_to: list[int] = []
        self.fetches = 0

    def skip_to(self, offset: int) -> None:
        self.skipped_to.append(offset)

    def fetch_needed(self) -> None:
        self.fetches += 1


class FakeShard:
    """A running shard as HistoryService.noticed_commands sees it: its intake."""

    def __init__(self, offset: int) -> None:
        self.intake, self.consumer = Intake(), Consumer()
        self.intake.start_at(offset, skip_to=self.consumer.skip_to, fetch_needed=self.consumer.fetch_needed)
        self.stopped = False

    def offer(self, command: HandedCommand) -> None:
        self.intake.offer(command)

    async def taken(self) -> list[tuple[int, bytes]]:
        """What the shard's loop takes of what waits in its inbox (offset, value)."""
        taken: list[tuple[int, bytes]] = []
        while not self.intake.empty():
            for item in self.intake.batch(await self.intake.next()):
                taken += [(r.offset, r.value) for r in item]
        self.intake.after_batch()
        return taken


def _service(**shards: FakeShard) -> HistoryService:
    service = HistoryService(Settings(database_url="postgresql://unused"))
    service.shards = {int(p.removeprefix("p")): s for p, s in shards.items()}  # type: ignore[misc]
    return service


def _notice(offset: int, value: bytes = b"v") -> CommandNotice:
    return CommandNotice(offset, b"ns/wf", value, (("traceparent", b"00-x"),))


def _fetched(*offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(kafka.REQUESTS, 0, o, 0, 0, b"ns/wf", b"fetched", None, 0, 0, []) for o in offsets]


async def test_a_noticed_command_at_the_next_offset_is_taken_and_the_fetch_skips_it() -> None:
    shard = FakeShard(10)
    service = _service(p0=shard)
    assert service.noticed_commands(0, [_notice(10), _notice(11)]) == NoticeOutcome(offered=2)
    assert await shard.taken() == [(10, b"v"), (11, b"v")]
    assert shard.consumer.skipped_to == [12]  # the consumer need not fetch them
    await shard.intake.feed(_fetched(10, 11, 12))  # fetched anyway: each offset taken once
    assert await shard.taken() == [(12, b"fetched")]
    assert service.command_notices.received == 2


async def test_a_noticed_command_past_a_gap_is_left_to_the_fetch() -> None:
    shard = FakeShard(10)
    service = _service(p0=shard)
    service.noticed_commands(0, [_notice(11)])  # another producer's record 10 comes first
    assert await shard.taken() == [] and shard.intake.consumed == 10
    await shard.intake.feed(_fetched(10, 11))
    assert await shard.taken() == [(10, b"fetched"), (11, b"fetched")]


async def test_a_duplicate_notice_is_taken_once() -> None:
    shard = FakeShard(3)
    service = _service(p0=shard)
    service.noticed_commands(0, [_notice(3)])
    service.noticed_commands(0, [_notice(3)])  # a frontend retrying, or two requests racing
    assert await shard.taken() == [(3, b"v")] and shard.intake.consumed == 4


async def test_a_notice_the_fetch_passed_is_dropped() -> None:
    shard = FakeShard(0)
    service = _service(p0=shard)
    await shard.intake.feed(_fetched(0, 1))
    assert await shard.taken() == [(0, b"fetched"), (1, b"fetched")]
    service.noticed_commands(0, [_notice(1)])
    assert await shard.taken() == [] and shard.intake.consumed == 2 and shard.consumer.fetches == 0


async def test_a_notice_for_a_partition_not_running_here_is_not_owned() -> None:
    stopped = FakeShard(0)
    stopped.stopped = True
    service = _service(p1=stopped)
    assert service.noticed_commands(0, [_notice(0)]) == NoticeOutcome(not_owned=1)
    assert service.noticed_commands(1, [_notice(0)]) == NoticeOutcome(not_owned=1)
    assert stopped.intake.empty() and service.command_notices.not_owned == 2


def test_notices_and_owner_names_round_trip() -> None:
    notices = [_notice(5), CommandNotice(6, b"k", b"\x00\xff")]
    assert notices_from_json(notices_to_json(2, notices)) == (2, notices)
    assert owner_address(owner_name("host-1a2b", "http://127.0.0.1:4000")) == "http://127.0.0.1:4000"
    assert owner_address(owner_name("host-1a2b", "")) is None and owner_address("host-1a2b") is None
    with pytest.raises(ValueError):
        notices_from_json({"partition": 0, "commands": [{"offset": -1, "key": "", "value": ""}]})
    with pytest.raises(ValueError):
        notices_from_json({"partition": 0, "commands": [{"offset": 1, "key": "not base64!", "value": ""}]})


# ---- the frontend's side ----------------------------------------------------------------------

class FakeOwners:
    def __init__(self, *, fail: bool = False, hold: asyncio.Event | None = None, not_owned: bool = False) -> None:
        self.sent: list[tuple[int, list[CommandNotice]]] = []
        self.fail, self.hold, self.not_owned = fail, hold, not_owned
        self.forgotten = 0
        self.closed = False

    async def notify(self, partition: int, notices: Sequence[CommandNotice], timeout: float) -> NoticeOutcome:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise NoticeFailed("down")
        self.sent.append((partition, list(notices)))
        return NoticeOutcome(not_owned=len(notices)) if self.not_owned else NoticeOutcome(offered=len(notices))

    def forget(self) -> None:
        self.forgotten += 1

    async def close(self) -> None:
        self.closed = True


class Ack:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _acked(offset: int) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(Ack(offset))
    return fut


def _bus(owners: FakeOwners, **options: Any) -> NoticedCommands:
    return NoticedCommands(KafkaCommands(), owners, **options)  # type: ignore[arg-type]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acknowledged_commands_are_noticed_per_partition_in_one_request_in_offset_order() -> None:
    owners = FakeOwners()
    bus = _bus(owners)
    assert not bus.colocated and bus.headers() == ()
    for partition, offset in ((0, 7), (1, 3), (0, 8)):
        bus.queued(partition, b"ns/wf", f"c{offset}".encode(), (), _acked(offset))
    refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    refused.set_exception(OSError("the broker refused it"))
    bus.queued(0, b"ns/wf", b"refused", (), refused)  # not on the broker: nothing to tell
    await _settle()
    assert sorted(owners.sent) == [(0, [CommandNotice(7, b"ns/wf", b"c7"), CommandNotice(8, b"ns/wf", b"c8")]),
                                   (1, [CommandNotice(3, b"ns/wf", b"c3")])]
    assert bus.counts.sent == 3
    await bus.close()
    assert owners.closed


async def test_one_request_per_partition_is_out_and_notices_past_the_bound_are_dropped() -> None:
    hold = asyncio.Event()
    owners = FakeOwners(hold=hold)
    bus = _bus(owners, max_pending=2)
    bus.queued(0, b"k", b"a", (), _acked(0))
    await _settle()  # the first request is out, held
    for offset in (1, 2, 3):
        bus.queued(0, b"k", b"b", (), _acked(offset))
    await _settle()
    assert bus.counts.dropped == 1 and owners.sent == []
    hold.set()
    await _settle()
    assert [[n.offset for n in notices] for _, notices in owners.sent] == [[0], [1, 2]]
    await bus.close()


async def test_failed_and_misdirected_notices_are_counted_and_the_owners_looked_up_again() -> None:
    owners = FakeOwners(fail=True)
    bus = _bus(owners)
    bus.queued(0, b"k", b"a", (), _acked(0))
    await _settle()
    assert bus.counts.failed == 1 and owners.forgotten == 1
    owners.fail, owners.not_owned = False, True
    bus.queued(0, b"k", b"a", (), _acked(1))
    await _settle()
    assert bus.counts.not_owned == 1 and owners.forgotten == 2 and bus.counts.sent == 0
    await bus.close()


# ---- history's endpoint -------------------------------------------------------------------------

async def test_the_endpoint_takes_notices_refuses_bad_ones_and_wants_the_internal_key() -> None:
    shard = FakeShard(0)
    service = _service(p0=shard)
    key = "k" * 16
    server = HealthServer(_service().health, Fatal(), notices=service.noticed_commands,
                          counts=service.notice_counts, internal_key=key)
    url = await server.start("127.0.0.1", 0)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + PATH, json=notices_to_json(0, [_notice(0)]), headers=auth) as resp:
                assert resp.status == 200 and await resp.json() == {"offered": 1, "not_owned": 0}
            async with http.post(url + PATH, json=notices_to_json(0, [_notice(1)])) as resp:
                assert resp.status == 401
            for bad in (b"[1]", b"{", b'{"partition": "x"}', b'{"partition": 0, "commands": [{"offset": 0}]}'):
                async with http.post(url + PATH, data=bad, headers=auth) as resp:
                    assert resp.status == 400, bad
                    assert (await resp.json())["error"] == "InvalidArgument"
            async with http.get(url + "/internal/notices", headers=auth) as resp:
                assert (await resp.json())["commands"] == {"received": 1, "not_owned": 0, "own": 0}
            async with http.get(url + "/health") as resp:  # health stays open, as before
                assert resp.status == 200
    finally:
        await server.stop()
    assert await shard.taken() == [(0, b"v")]


class FakePool:
    """The owners' rows (the lookup's caching is under test, not PostgreSQL)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows, self.reads = rows, 0

    async def fetch(self, query: str) -> list[dict[str, Any]]:
        self.reads += 1
        return self.rows


async def test_owners_are_read_from_shards_owner_and_not_again_for_every_failure() -> None:
    pool = FakePool([{"shard_id": 0, "owner": owner_name("h1", "http://127.0.0.1:1")},
                     {"shard_id": 1, "owner": "h2"}])  # h2 takes no notices
    owners = HistoryOwners(pool)  # type: ignore[arg-type]
    assert await owners.address(0) == "http://127.0.0.1:1" and await owners.address(1) is None
    assert pool.reads == 1
    with pytest.raises(NoticeFailed):
        await owners.notify(1, [_notice(0)], 1.0)  # no owner serving notices: no request
    owners.forget()
    await owners.address(1)
    assert pool.reads == 1  # read again only OWNER_RETRY_S after the last read
    owners._read_at -= OWNER_RETRY_S * 2
    await owners.address(1)
    await owners.address(1)
    assert pool.reads == 2
    await owners.close()
