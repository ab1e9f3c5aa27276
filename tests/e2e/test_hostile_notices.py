"""Hostile callers against the notices told at the commit between separate services (decision
0015): a tenant producing commands straight to ``kadence.requests`` chooses the command's
``reply_to``, which names where history sends its reply notices. History must send them only
to a frontend that vouched for its address, never to an address of the tenant's choosing
(which would receive KADENCE_INTERNAL_KEY in the notice's Authorization header)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from yarl import URL

from kadence import kafka as ingress
from services.cluster import Cluster
from services.common import command_notices, reply_notices
from services.common.bind import serve
from tests.helpers import eventually

from .test_command_notices import KEY, _run_workflows, separate
from .test_ingress import _reply

__all__ = ["separate"]  # the fixture

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("tail", ["", "/api/v1/namespaces/default/workflows/x/terminate?ignored="],
                         ids=["own-address", "path-and-query"])
async def test_a_kafka_producer_cannot_point_reply_notices_at_an_address_of_its_own(
        separate: Cluster, tail: str) -> None:
    caught: list[tuple[str, str | None]] = []

    async def catch(request: web.Request) -> web.Response:
        caught.append((request.path_qs, request.headers.get("Authorization")))
        return web.json_response({"delivered": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", catch)
    runner, url = await serve(app, "127.0.0.1", 0)
    notices = separate.history.reply_notices
    assert notices is not None
    try:
        wid, request_id = f"evil-{uuid.uuid4().hex[:8]}", f"req-{uuid.uuid4().hex[:8]}"
        reply_to = f"tenant {url}{tail}"
        producer = AIOKafkaProducer(bootstrap_servers=separate.settings.kafka_bootstrap)
        await producer.start()
        try:
            value = ingress.encode_start("default", wid, "EchoWorkflow", "q-evil", ["x"], request_id=request_id,
                                         reply_to=reply_to)
            await producer.send_and_wait("kadence.requests", value, key=f"default/{wid}".encode())
        finally:
            await producer.stop()
        # The command is applied and answered on kadence.replies as always.
        reply = await _reply(separate.settings.kafka_bootstrap, reply_to, request_id, timeout=30)
        assert reply.ok and reply.workflow_id == wid
        # The notice is decided at the commit, before the reply is published: by now history
        # has either sent it (to the tenant's address) or refused to.
        await eventually(lambda: caught or getattr(notices.counts, "unvouched", 0) >= 1, timeout=10,
                         what="history sending or refusing the reply notice")
        assert caught == [], f"history sent a reply notice to a tenant's address: {caught}"
        assert all(KEY not in (auth or "") for _, auth in caught)
    finally:
        await runner.cleanup()


def _endpoints(cluster: Cluster) -> dict[str, str]:
    """The three notice endpoints between separate services."""
    history, frontend = cluster.history.health_server, cluster.frontend.reply_notices
    assert history is not None and history.takes_notices and frontend is not None
    return {"matching": cluster.matching.address + "/internal/notice",
            "history": history.url + command_notices.PATH,
            "frontend": frontend.url + reply_notices.PATH}


async def test_forged_notices_are_refused_with_a_4xx_and_the_services_carry_on(separate: Cluster) -> None:
    endpoints = _endpoints(separate)
    good = {"Authorization": f"Bearer {KEY}"}
    huge = b'{"partition": 0, "tasks": [], "replies": [], "pad": "' + b"x" * (8 << 20) + b'"}'
    bodies = [b"", b"{", b"[]", b'{"partition": "x"}', b'{"partition": 0, "tasks": [{"value": "!!"}]}',
              b'{"partition": 0, "tasks": [{"offset": 0, "value": "AAAA"}]}', b'{"replies": ["AAAA"]}',
              b'{"partition": 0, "notices": [{"offset": -5, "key": "", "value": ""}]}', huge]
    async with aiohttp.ClientSession() as http:
        for name, url in endpoints.items():
            for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"bearer {KEY}"},
                            {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}):
                async with http.post(url, data=b'{"partition": 0, "tasks": [], "replies": []}',
                                     headers=headers) as resp:
                    assert resp.status == 401, (name, headers, resp.status)
            for body in bodies:
                data = io.BytesIO(body) if body is huge else body
                async with http.post(url, data=data, headers=good) as resp:
                    text = await resp.text()
                    if body is huge:
                        assert resp.status == 413, (name, resp.status)
                    elif resp.status == 200:
                        # A notice of nothing, or of a record that does not parse (a hint taken by
                        # nobody: the fetch dead-letters the record, if there is one).
                        taken = json.loads(text)
                        assert taken.get("matched", 0) == taken.get("offered", 0) == taken.get("delivered", 0) == 0
                    else:
                        assert 400 <= resp.status < 500, (name, body[:80], resp.status, text[:300])
    # Every hop still works, through notices.
    await _run_workflows(separate.url, "q-after-forgery")
    assert separate.history.reply_notices is not None and separate.history.reply_notices.counts.sent > 0


async def test_a_frontend_whose_notice_endpoint_hangs_does_not_stall_history(separate: Cluster) -> None:
    server = separate.frontend.reply_notices
    assert server is not None
    url = URL(server.url)
    await server.stop()
    hung, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        hung.set()
        await release.wait()
        return web.json_response({})

    # The address the frontend's reply_to names now takes each notice and never answers.
    app = web.Application()
    app.router.add_post(reply_notices.PATH, hang)
    runner, _ = await serve(app, url.host or "127.0.0.1", url.port or 0)
    try:
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(_run_workflows(separate.url, "q-hung", n=5), 60)
        assert hung.is_set()
        notices = separate.history.reply_notices
        assert notices is not None
        # Each request out hung until its timeout: the replies came by the fetch, the commits went on.
        await eventually(lambda: notices.counts.failed >= 1, what="a hung notice timing out")
        assert asyncio.get_running_loop().time() - started < 60
    finally:
        release.set()
        await runner.cleanup()
