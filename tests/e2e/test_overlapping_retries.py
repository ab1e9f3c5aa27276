"""Overlapping retries of one request (the same request id, sent again while the first call
is still out) each get the answer, through the real stack."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from kadence import Client

pytestmark = pytest.mark.timeout(60)

WORKFLOWS = 30
RETRIES = 20


async def test_identical_concurrent_starts_all_get_the_same_run(client: Client) -> None:
    async def start(wid: str, request_id: str, k: int) -> str | None:
        # The retries of each request spread over 0.3 s, as a client's are: some land just
        # as an earlier call's answer is handed back and that call cleans up.
        await asyncio.sleep(delays[k])
        handle = await client.start_workflow("NobodyRunsThis", id=wid, task_queue="q-nobody", request_id=request_id)
        return handle.run_id

    rng = random.Random(15)
    ids = [(f"retried-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex) for _ in range(WORKFLOWS)]
    calls = [(wid, rid) for wid, rid in ids for _ in range(RETRIES)]
    delays = [rng.random() * 0.3 for _ in calls]
    # Well under the frontend's 30 s reply timeout: a lost waiter shows as a timeout here.
    async with asyncio.timeout(20):
        answers = await asyncio.gather(*(start(wid, rid, k) for k, (wid, rid) in enumerate(calls)))
    assert len(answers) == WORKFLOWS * RETRIES
    for i in range(WORKFLOWS):
        runs = set(answers[i * RETRIES:(i + 1) * RETRIES])
        assert len(runs) == 1 and None not in runs, f"workflow {ids[i][0]} got runs {runs}"
