"""A frontend frozen (SIGSTOP) while workers long-poll it, then continued.

The workers' frontend runs as its own process (``python -m services.frontend``); history,
matching and a second frontend (the client's) run here. While the workers' frontend is
frozen, workflows are started through the other one: matching hands their tasks to the
polls the frozen frontend holds, whose answers wait in its sockets. Once it is continued,
every workflow completes once, and the time from the thaw to the last result is measured:
a task handed to a poll whose worker gave up waiting is lost to it until its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from kadence import Client, Worker, activity, workflow
from services.common import db
from services.common.embedded import EmbeddedBroker
from services.common.matching.client import MatchingClient
from services.frontend import FrontendService
from services.frontend.tokens import KEYS_SETTING, TokenKeys
from services.history import HistoryService
from services.matching import MatchingService
from tests.helpers import elapse, eventually

from .test_command_notices import ROOT, end_processes
from .test_hostile_notices import _separate_services

pytestmark = pytest.mark.timeout(300)
# The workers' long polls wait this long (the SDK's default is 20 s); a poll's request gives
# up 15 s after that (kadence/_worker/poller.py). Shorter, the freeze that outlasts a poll is
# shorter too; the tasks are still handed to the frozen polls, started well within their wait.
POLL_WAIT_S = 8.0
GIVES_UP_S = POLL_WAIT_S + 15
RAN: Counter[str] = Counter()


@activity.defn(name="fe_step")
async def fe_step(value: str) -> str:
    RAN[value] += 1
    return value


@workflow.defn
class ThroughFrontend:
    @workflow.run
    async def run(self, value: str) -> str:
        done: str = await workflow.execute_activity(fe_step, value, start_to_close_timeout=timedelta(seconds=20))
        return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("freeze_s", [POLL_WAIT_S, GIVES_UP_S + 5], ids=["within-poll", "past-poll"])
async def test_a_frozen_frontend_loses_no_workflow(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path, freeze_s: float) -> None:
    settings, env = await _separate_services(broker, fresh_dsn, colocate=False)
    keys = TokenKeys.new_key()
    settings = dataclasses.replace(settings, task_token_keys=keys)
    port = _free_port()
    env.update({"KADENCE_FRONTEND_PORT": str(port), KEYS_SETTING: keys})
    log = tmp_path / "frontend.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.frontend"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    pool = await db.create_pool(fresh_dsn)
    history = HistoryService(settings, pool=pool)
    matching = MatchingService(settings, pool=pool)
    matching_client: MatchingClient | None = None
    frontend: FrontendService | None = None
    tag = uuid.uuid4().hex[:6]
    warm = [f"ff-{tag}-w{i}" for i in range(3)]
    ids = [f"ff-{tag}-{i}" for i in range(20)]
    frozen = False
    worker_url = f"http://127.0.0.1:{port}"
    try:
        await history.start()
        await matching.start()
        matching_client = MatchingClient(pool, settings.task_partitions, local=matching,
                                         internal_key=settings.internal_key)
        frontend = FrontendService(settings, pool=pool, matching=matching_client)
        await frontend.start()

        async def serving() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the frontend process exited; see {log}")
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        await eventually(serving, timeout=60, every=0.2, what="the workers' frontend serving")
        tq = f"q-frontend-frozen-{tag}"
        async with await Client.connect(worker_url, namespace="default") as worker_client, \
                await Client.connect(frontend.url, namespace="default") as client, \
                Worker(worker_client, task_queue=tq, workflows=[ThroughFrontend], activities=[fe_step],
                       poll_wait_seconds=POLL_WAIT_S):
            first = [await client.start_workflow(ThroughFrontend.run, w, id=w, task_queue=tq) for w in warm]
            assert await asyncio.wait_for(asyncio.gather(*(h.result() for h in first)), 60) == warm
            os.kill(proc.pid, signal.SIGSTOP)  # the workers' polls wait in it
            frozen = True
            frozen_at = time.monotonic()
            handles = await asyncio.wait_for(asyncio.gather(*(
                client.start_workflow(ThroughFrontend.run, w, id=w, task_queue=tq) for w in ids)), 30)
            await elapse(max(0.0, freeze_s - (time.monotonic() - frozen_at)))  # the freeze itself
            os.kill(proc.pid, signal.SIGCONT)
            frozen = False
            thawed_at = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 150)
            recovered_s = time.monotonic() - thawed_at
            histories = [await h.history() for h in handles]
        print(f"frozen frontend {freeze_s} s: every result {recovered_s:.1f} s after the thaw")
        assert results == ids
        for wid, events in zip(ids, histories, strict=True):
            kinds = Counter(e["event_type"] for e in events)
            assert kinds["ActivityTaskCompleted"] == 1 and kinds["WorkflowExecutionCompleted"] == 1, (wid, kinds)
    finally:
        if frozen:
            os.kill(proc.pid, signal.SIGCONT)
        if frontend is not None:
            await frontend.stop()
        if matching_client is not None:
            await matching_client.close()
        await matching.stop()
        await history.stop()
        await pool.close()
        end_processes([proc])
