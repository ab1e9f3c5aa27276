"""Reply notices (services/common/reply_notices.py, services/frontend/reply_notices.py): the
relay sends each frontend named by a reply_to with an address the replies addressed to it,
only replies, never blocking; the frontend's endpoint answers waiters as a fetched reply would,
refuses what is not a notice, and wants the internal key."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import pytest

from kadence_protocol import avro
from services.common.kafka import REPLIES, TASKS, Published, Record
from services.common.reply_notices import PATH, BothNotices, ReplyNotices, replies_to_json, reply_to_of, vouched_address
from services.frontend.reply_notices import ReplyNoticeServer

pytestmark = pytest.mark.timeout(10)
KEY = "reply-notices-unit-key"
OTHER_KEY = "some-other-internal-key"


def _reply(reply_to: str, request_id: str) -> dict[str, Any]:
    return {"reply_to": reply_to, "request_id": request_id, "ok": True, "run_id": "run-1", "error_type": None,
            "error_message": None, "namespace": "default", "workflow_id": "wf", "created": True,
            "update_outcome": None}


def _record(reply_to: str, request_id: str) -> Record:
    return (REPLIES, reply_to.encode(), avro.encode("Reply", _reply(reply_to, request_id)), ())


async def _server(delivered: list[dict[str, Any]]) -> ReplyNoticeServer:
    server = ReplyNoticeServer(delivered.extend, KEY)
    await server.start("127.0.0.1")
    return server


async def test_history_sends_each_frontend_its_replies_at_the_commit_and_nothing_else() -> None:
    delivered: list[dict[str, Any]] = []
    server = await _server(delivered)
    reply_to = reply_to_of("fe-1", server.url, KEY)
    notices = ReplyNotices(KEY)
    try:
        records = [_record(reply_to, "r1"), (TASKS, b"k", b"task", ()), _record("fe-without-address", "r2"),
                   _record(reply_to, "r3")]
        assert [notices.covers(t, k) for t, k, *_ in records] == [True, False, False, True]
        notices.committed(records)
        await asyncio.wait_for(asyncio.gather(*notices._queue.in_flight.values()), 5)
        assert [r["request_id"] for r in delivered] == ["r1", "r3"]
        assert notices.counts.sent == 1 and server.received == 2
    finally:
        await notices.close()
        await server.stop()


async def test_a_frontend_gone_or_refusing_counts_as_failed() -> None:
    delivered: list[dict[str, Any]] = []
    server = await _server(delivered)
    refused = ReplyNotices(OTHER_KEY)
    gone = ReplyNotices(KEY)
    try:
        refused.committed([_record(reply_to_of("fe-1", server.url, OTHER_KEY), "r1")])
        await asyncio.wait_for(asyncio.gather(*refused._queue.in_flight.values()), 5)
        url = server.url
        await server.stop()
        gone.committed([_record(reply_to_of("fe-1", url, KEY), "r2")])
        await asyncio.wait_for(asyncio.gather(*gone._queue.in_flight.values()), 5)
        assert (refused.counts.failed, gone.counts.failed, delivered) == (1, 1, [])
    finally:
        await refused.close()
        await gone.close()
        await server.stop()


async def test_notices_past_the_bound_are_dropped_not_queued() -> None:
    notices = ReplyNotices(KEY, max_in_flight=1)
    try:
        # Unreachable (port 9 of a documentation address): the first stays out, the second is dropped.
        notices.committed([_record(reply_to_of("fe-1", "http://192.0.2.1:9", KEY), "r1")])
        notices.committed([_record(reply_to_of("fe-2", "http://192.0.2.2:9", KEY), "r2")])
        assert notices.counts.dropped == 1
    finally:
        await notices.close()


async def test_the_endpoint_refuses_bad_notices_and_wants_the_key() -> None:
    delivered: list[dict[str, Any]] = []
    server = await _server(delivered)
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        async with aiohttp.ClientSession() as http:
            body = replies_to_json([avro.encode("Reply", _reply("fe", "r1"))])
            async with http.post(server.url + PATH, json=body) as resp:
                assert resp.status == 401
            for bad in (b"[]", b"{", b'{"replies": [1]}', b'{"replies": ["!!"]}', b'{"replies": ["AAAA"]}'):
                async with http.post(server.url + PATH, data=bad, headers=auth) as resp:
                    assert resp.status == 400, bad
            async with http.post(server.url + PATH, json=body, headers=auth) as resp:
                assert resp.status == 200 and await resp.json() == {"delivered": 1}
    finally:
        await server.stop()
    assert [r["request_id"] for r in delivered] == ["r1"]


class Recorder:
    def __init__(self) -> None:
        self.told: list[int] = []
        self.updates: list[Mapping[bytes, object] | None] = []
        self.closed = False

    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: Mapping[bytes, object] | None = None) -> None:
        self.told.append(len(records))
        self.updates.append(updates)

    async def close(self) -> None:
        self.closed = True


async def test_both_notices_tell_both() -> None:
    a, b = Recorder(), Recorder()
    both = BothNotices(a, b)
    both.published([_record("fe", "r")], [Published(REPLIES, 0, 0)], {b"t": []})
    await both.close()
    assert (a.told, b.told, a.closed, b.closed) == ([1], [1], True, True)
    assert a.updates == b.updates == [{b"t": []}]


def test_only_an_address_a_frontend_vouched_for_with_the_key_is_sent_to() -> None:
    vouched = reply_to_of("fe-1", "http://10.0.0.5:4100", KEY)
    assert vouched_address(vouched, KEY) == "http://10.0.0.5:4100"
    tag = vouched.rsplit(" ", 1)[1]
    refused = [
        "fe-1 http://10.0.0.5:4100",  # an older frontend's reply_to, or a tenant's: no tag
        reply_to_of("fe-1", "http://10.0.0.5:4100", OTHER_KEY),  # tagged under another key
        f"fe-1 http://203.0.113.9:80 {tag}",  # a real tag copied onto a tenant's address
        f"fe-2 http://10.0.0.5:4100 {tag}",  # ... or onto another instance id
        reply_to_of("fe-1", "http://10.0.0.5:4100/api/v1/namespaces/x?y=", KEY),  # not a plain address
        reply_to_of("fe-1", "http://user:pw@10.0.0.5:4100", KEY),
        reply_to_of("fe-1", "ftp://10.0.0.5:4100", KEY),
        reply_to_of("fe-1", "http://10.0.0.5", KEY),  # no port: never what a frontend names
        "me", "",
    ]
    assert [vouched_address(r, KEY) for r in refused] == [None] * len(refused)


def test_without_a_key_only_a_loopback_ip_is_sent_to() -> None:
    # Without KADENCE_INTERNAL_KEY anyone can compute the tag: only this machine's loopback is
    # trusted, as the frontend's endpoint then listens nowhere else (internal_auth.check_bind).
    assert vouched_address(reply_to_of("fe-1", "http://127.0.0.1:4100", ""), "") == "http://127.0.0.1:4100"
    assert vouched_address(reply_to_of("fe-1", "http://[::1]:4100", ""), "") == "http://[::1]:4100"
    for address in ("http://10.0.0.5:4100", "http://localhost:4100", "http://evil.example:80"):
        assert vouched_address(reply_to_of("fe-1", address, ""), "") is None, address


async def test_a_reply_to_no_frontend_vouched_for_is_not_covered_and_counted_once() -> None:
    notices = ReplyNotices(KEY)
    try:
        forged = "tenant http://127.0.0.1:9"
        assert not notices.covers(REPLIES, forged.encode())
        notices.committed([_record(forged, "r1"), _record(forged, "r2"), _record("me", "r3")])
        assert notices._queue.in_flight == {} and notices.counts.unvouched == 1
    finally:
        await notices.close()
