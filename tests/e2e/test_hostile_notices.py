"""Hostile callers against the notices told at the commit between separate services (decision
0015): a tenant producing commands straight to ``kadence.requests`` chooses the command's
``reply_to``, which names where history sends its reply notices. History must send them only
to a frontend that vouched for its address, never to an address of the tenant's choosing
(which would receive KADENCE_INTERNAL_KEY in the notice's Authorization header)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from yarl import URL

from kadence import Client, Worker, activity
from kadence import kafka as ingress
from services.cluster import Cluster
from services.common import command_notices, db, kafka, reply_notices
from services.common.bind import serve
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from services.history import HistoryService
from services.matching import MatchingService
from tests.helpers import eventually

from .test_command_notices import KEY, ROOT, _history_process, _run_workflows, end_processes, separate
from .test_ingress import _reply
from .workflows import EchoWorkflow

__all__ = ["separate"]  # the fixture

pytestmark = pytest.mark.timeout(240)


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


async def test_history_killed_and_restarted_with_notices_in_flight_loses_and_repeats_nothing(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    """History in its own process (``python -m services.history``), frontend and matching here,
    notices on between them. History is killed (-9) while starts, task notices and reply
    notices are in flight, and started again: every start acknowledged completes, each
    workflow's activity completing once, with the result of its own input."""
    settings, env = await _separate_services(broker, fresh_dsn)
    log = tmp_path / "history.log"
    procs = [_history_process(env, log)]
    pool = await db.create_pool(fresh_dsn)
    matching = MatchingService(settings, pool=pool)
    frontend: FrontendService | None = None
    ids = [f"killed-{i}-{uuid.uuid4().hex[:6]}" for i in range(30)]
    echoes = _Echoes(held=set(ids[10:]))  # the racing starts'
    ran = echoes.ran

    async def owners_serve() -> bool:
        if procs[-1].poll() is not None:
            pytest.fail(f"the history process exited; see {log}")
        rows = await pool.fetch("SELECT owner FROM shards")
        return len(rows) == 2 and all(command_notices.owner_address(r["owner"]) for r in rows)

    try:
        await matching.start()
        frontend = FrontendService(settings, pool=pool)
        await frontend.start()
        await eventually(owners_serve, timeout=60, every=0.1, what="history owning both shards, serving notices")
        tq = "q-history-killed"
        async with await Client.connect(frontend.url, namespace="default") as client, \
                Worker(client, task_queue=tq, workflows=[EchoWorkflow], activities=[echoes.activity]):
            handles = [await client.start_workflow(EchoWorkflow.run, wid, id=wid, task_queue=tq) for wid in ids[:10]]
            # The next starts race the kill: each that is acknowledged must complete.
            starting = [asyncio.create_task(client.start_workflow(EchoWorkflow.run, wid, id=wid, task_queue=tq))
                        for wid in ids[10:]]
            await eventually(lambda: sum(ran.values()) >= 5, timeout=30, what="some activities run")
            procs[-1].kill()
            assert len(ran) < len(ids), "the kill came after every workflow's activity: it tests nothing"
            procs[-1].wait(timeout=10)
            procs.append(_history_process(env, log))
            echoes.killed.set()
            handles += await asyncio.wait_for(asyncio.gather(*starting), 90)
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 90)
            histories = [await h.history() for h in handles]
        _each_completed_once(ids, results, ran, histories)
    finally:
        if frontend is not None:
            await frontend.stop()
        await matching.stop()
        await pool.close()
        end_processes(procs)


async def test_matching_killed_and_restarted_with_task_notices_in_flight_loses_and_repeats_nothing(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    """Matching in its own process (``python -m services.matching``), history and frontend
    here, task notices on. Matching is killed (-9) while history tells it of tasks and polls
    wait on it, and started again: every workflow completes once with its own result."""
    settings, env = await _separate_services(broker, fresh_dsn, colocate=False)
    env["KADENCE_MATCHING_PORT"] = "0"
    log = tmp_path / "matching.log"

    def matching_process() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "services.matching"], cwd=ROOT, env=env,
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    procs = [matching_process()]
    pool = await db.create_pool(fresh_dsn)
    history = HistoryService(settings, pool=pool)
    frontend: FrontendService | None = None
    ids = [f"m-killed-{i}-{uuid.uuid4().hex[:6]}" for i in range(30)]
    echoes = _Echoes(held=set(ids[15:]))  # the later half's
    ran = echoes.ran

    async def matching_owns_both() -> bool:
        if procs[-1].poll() is not None:
            pytest.fail(f"the matching process exited; see {log}")
        return len(await pool.fetch("SELECT partition FROM matching_owners")) == 2

    try:
        await history.start()
        frontend = FrontendService(settings, pool=pool)
        await frontend.start()
        await eventually(matching_owns_both, timeout=60, every=0.1, what="matching owning both task partitions")
        tq = "q-matching-killed"
        async with await Client.connect(frontend.url, namespace="default") as client, \
                Worker(client, task_queue=tq, workflows=[EchoWorkflow], activities=[echoes.activity]):
            handles = [await client.start_workflow(EchoWorkflow.run, wid, id=wid, task_queue=tq) for wid in ids]
            await eventually(lambda: sum(ran.values()) >= 5, timeout=30, what="some activities run")
            procs[-1].kill()
            procs[-1].wait(timeout=10)
            assert len(ran) < len(ids), "the kill came after every workflow's activity: it tests nothing"
            procs.append(matching_process())
            echoes.killed.set()
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            histories = [await h.history() for h in handles]
        _each_completed_once(ids, results, ran, histories)
    finally:
        if frontend is not None:
            await frontend.stop()
        await history.stop()
        await pool.close()
        end_processes(procs)


async def _separate_services(broker: EmbeddedBroker, dsn: str, *,
                             colocate: bool = True) -> tuple[Settings, dict[str, str]]:
    """A migrated database and the topics; the settings of the services here and the
    environment of the one run as its own process (notices on between them)."""
    await db.migrate(dsn)
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, internal_key=KEY, colocate=colocate)
    env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": broker.bootstrap, "KADENCE_DATABASE_URL": dsn,
           "KADENCE_SHARDS": "2", "KADENCE_TASK_PARTITIONS": "2", "KADENCE_SESSION_TIMEOUT_MS": "2000",
           "KADENCE_INTERNAL_KEY": KEY}
    return settings, env


class _Echoes:
    """The workflows' activity, counting its runs per workflow. Those of ``held`` wait for
    ``killed``: on a quick machine every activity had run before the kill, which then found
    nothing in flight."""

    def __init__(self, held: set[str]) -> None:
        self.ran: Counter[str] = Counter()
        self.killed = asyncio.Event()

        @activity.defn(name="echo")
        async def counted_echo(value: str) -> str:
            if value in held:
                await self.killed.wait()
            self.ran[activity.info().workflow_id] += 1
            return value

        self.activity = counted_echo


def _each_completed_once(ids: list[str], results: list[str], ran: Counter[str],
                         histories: list[list[dict[str, Any]]]) -> None:
    """Every workflow completed with its own input, its activity run; a task may be handed
    out twice across the kill (decision 0015), it is applied once."""
    assert results == ids
    assert set(ran) == set(ids)
    for wid, events in zip(ids, histories, strict=True):
        kinds = Counter(e["event_type"] for e in events)
        assert (kinds["WorkflowExecutionStarted"], kinds["ActivityTaskScheduled"], kinds["ActivityTaskCompleted"],
                kinds["WorkflowExecutionCompleted"]) == (1, 1, 1, 1), (wid, kinds)
