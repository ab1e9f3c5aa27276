"""Hostile callers against the notices told at the commit between separate services (decision
0015): a tenant producing commands straight to ``kadence.requests`` chooses the command's
``reply_to``, which names where history sends its reply notices. History must send them only
to a frontend that vouched for its address, never to an address of the tenant's choosing
(which would receive KADENCE_INTERNAL_KEY in the notice's Authorization header)."""

from __future__ import annotations

import uuid

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from kadence import kafka as ingress
from services.cluster import Cluster
from services.common.bind import serve
from tests.helpers import eventually

from .test_command_notices import KEY, separate
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
