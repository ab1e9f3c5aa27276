"""Matching frozen (SIGSTOP) for 12 s while workers' polls wait in it, then continued.

Matching runs as its own process (``python -m services.matching``), history and the
frontend here. While it is frozen: starts are still accepted (history does not wait for
matching), the frontend's /health and a task queue's description answer within a bound,
and the workers' polls wait. Once it is continued every workflow started meanwhile
completes once, within a measured time of the thaw; none waits for a task timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from kadence import Client, Worker
from services.common import db, internal_auth
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from services.history import HistoryService
from tests.helpers import elapse, eventually

from .test_command_notices import KEY, ROOT, end_processes
from .test_hostile_notices import _each_completed_once, _Echoes, _separate_services
from .workflows import EchoWorkflow

FREEZE_S = 12.0  # past the 8 s a description must answer within
pytestmark = pytest.mark.timeout(FREEZE_S + 180)
# A start, /health, a task queue's description (matching's 5 s, once: it asked the silent owner
# twice, 10 s) while matching is frozen, on a slow shared machine.
ANSWERED_WITHIN_S = 8.0
# From the thaw to every result: the workflows' tasks wait in matching's backlog (or its
# partition's records) for the polls, which come back within their own long-poll wait.
RECOVERED_WITHIN_S = 30.0


async def test_a_frozen_matching_holds_polls_and_loses_nothing(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    settings, env = await _separate_services(broker, fresh_dsn, colocate=False)
    env["KADENCE_MATCHING_PORT"] = "0"
    log = tmp_path / "matching.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.matching"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    pool = await db.create_pool(fresh_dsn)
    history = HistoryService(settings, pool=pool)
    frontend: FrontendService | None = None
    tag = uuid.uuid4().hex[:6]
    warm = [f"mf-{tag}-w{i}" for i in range(5)]
    ids = [f"mf-{tag}-{i}" for i in range(20)]
    echoes = _Echoes(held=set())
    frozen = False

    async def matching_owns_both() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the matching process exited; see {log}")
        return len(await pool.fetch("SELECT partition FROM matching_owners")) == 2

    try:
        await history.start()
        frontend = FrontendService(settings, pool=pool)
        await frontend.start()
        await eventually(matching_owns_both, timeout=60, every=0.1, what="matching owning both task partitions")
        tq = "q-matching-frozen"
        async with await Client.connect(frontend.url, namespace="default") as client, \
                Worker(client, task_queue=tq, workflows=[EchoWorkflow], activities=[echoes.activity]), \
                aiohttp.ClientSession() as http:
            first = [await client.start_workflow(EchoWorkflow.run, w, id=w, task_queue=tq) for w in warm]
            assert await asyncio.wait_for(asyncio.gather(*(h.result() for h in first)), 60) == warm
            os.kill(proc.pid, signal.SIGSTOP)  # the workers' polls now wait in it
            frozen = True
            frozen_at = time.monotonic()
            timings: dict[str, float] = {}
            began = time.monotonic()
            handles = await asyncio.wait_for(asyncio.gather(*(
                client.start_workflow(EchoWorkflow.run, w, id=w, task_queue=tq) for w in ids)), ANSWERED_WITHIN_S + 20)
            timings["starts"] = time.monotonic() - began
            async with http.get(frontend.url + "/health") as r:
                health_status = r.status
            timings["health"] = time.monotonic() - frozen_at - timings["starts"]
            async with http.get(f"{frontend.url}/api/v1/namespaces/default/task-queues/{tq}") as r:
                describe_status = r.status
                described = await r.json()
            timings["describe"] = time.monotonic() - frozen_at - timings["starts"] - timings["health"]
            await elapse(max(0.0, FREEZE_S - (time.monotonic() - frozen_at)))  # the freeze itself
            os.kill(proc.pid, signal.SIGCONT)
            frozen = False
            thawed_at = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            recovered_s = time.monotonic() - thawed_at
            histories = [await h.history() for h in handles]
            # No loop of the continued matching died: its own health says so.
            address = await pool.fetchval("SELECT address FROM matching_owners LIMIT 1")
            async with http.get(f"{address}/internal/health", headers=internal_auth.headers(KEY)) as r:
                matching_health = r.status
        print(f"frozen matching: {timings}, health {health_status}, describe {describe_status};"
              f" every result {recovered_s:.1f} s after the thaw")
        _each_completed_once(ids, results, Counter({w: n for w, n in echoes.ran.items() if w in ids}), histories)
        assert all(took <= ANSWERED_WITHIN_S for took in timings.values()), timings
        assert health_status == 200 and matching_health == 200
        # Answered without the pollers, which only the frozen owner knows (the backlog is read
        # from PostgreSQL), and saying so.
        assert describe_status == 200 and described["pollers_known"] is False, (describe_status, described)
        assert recovered_s <= RECOVERED_WITHIN_S, recovered_s
    finally:
        if frozen:
            os.kill(proc.pid, signal.SIGCONT)
        if frontend is not None:
            await frontend.stop()
        await history.stop()
        await pool.close()
        end_processes([proc])
