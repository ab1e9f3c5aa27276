"""Mass replays against a small frontend pool: one namespace's flood of history reads (the
pages a worker whose cache missed reads to replay) must not cost another namespace its
describes, result waits and commands' reads. Each kind of read has its share of the pool and
waits for a slot within its bound; a read that still gives up says why
(services/common/read_budgets.py).

The history pages are made slow the way a busy disk makes large pages slow: the test holds a
lock on history_events, so every page read holds its connection until the lock goes. The
outcome then turns on who may take the pool's connections, not on this machine's CPU: before
the shares, the flood held every connection and the other namespace's reads answered 503.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from kadence import Client
from kadence.exceptions import RPCError
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)

POOL = 4  # connections frontend and matching share (KADENCE_FRONTEND_POOL_SIZE)
READ_TIMEOUT_MS = 1000  # each read's bound (KADENCE_READ_TIMEOUT_MS)
RUNS = 20  # the noisy namespace's runs
FLOOD = 300  # history pages asked at once, as a restarted worker's replays would
QUIET = 10  # each of describe, result wait and an activity token's read, in the quiet namespace


@pytest.fixture
async def small_pool(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, frontend_pool_size=POOL,
                        read_timeout_ms=READ_TIMEOUT_MS, namespace_rps=0)
    async with Cluster(settings) as c:
        yield c


async def _start(client: Client, prefix: str, count: int) -> list[str]:
    # No worker polls this queue: each run stays open with its first workflow task pending.
    ids = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for wid in ids:
        await client.start_workflow("Parked", id=wid, task_queue="nobody-polls")
    return ids


async def test_a_flood_of_slow_history_reads_leaves_other_namespaces_answered(small_pool: Cluster) -> None:
    url = small_pool.url
    async with await Client.connect(url) as admin:
        await admin.create_namespace("quiet", retention="1d")
    async with await Client.connect(url, namespace="default") as noisy_client:
        noisy_ids = await _start(noisy_client, "noisy", RUNS)
    async with await Client.connect(url, namespace="quiet") as quiet_client:
        quiet_ids = await _start(quiet_client, "quiet", 3)

    noisy: Counter[int] = Counter()
    unavailable: list[tuple[dict[str, str], dict[str, Any]]] = []
    blocker = await asyncpg.connect(small_pool.settings.database_url)
    # Another connection looks: in a transaction, pg_stat_activity is read once and kept.
    observer = await asyncpg.connect(small_pool.settings.database_url)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
            async with http.request(method, url + path, **kwargs) as resp:
                body = await resp.json()
                if resp.status in (429, 503):
                    unavailable.append((dict(resp.headers), body))
                return resp.status, body

        async def history(i: int) -> None:
            status, _ = await call("GET", f"/api/v1/namespaces/default/workflows/{noisy_ids[i % RUNS]}/history")
            noisy[status] += 1

        async def stuck_on_the_lock() -> bool:
            return int(await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%history_events%'")) >= 2

        lock = blocker.transaction()
        await lock.start()
        try:
            await blocker.execute("LOCK TABLE history_events IN ACCESS EXCLUSIVE MODE")
            flood = [asyncio.ensure_future(history(i)) for i in range(FLOOD)]
            # The flood holds connections, each stuck on a page, before the other namespace asks.
            # (Two: the most the history reads' share of this pool holds.)
            await eventually(stuck_on_the_lock, what="two history reads waiting on the lock")
            quiet_calls = []
            for i in range(QUIET):
                base = f"/api/v1/namespaces/quiet/workflows/{quiet_ids[i % len(quiet_ids)]}"
                quiet_calls += [call("GET", base), call("GET", base + "/result", params={"wait_seconds": "0"}),
                                call("GET", base + "/activities/none/task-token")]
            quiet = Counter((status, body.get("error")) for status, body in await asyncio.gather(*quiet_calls))
        finally:
            await lock.rollback()
            await blocker.close()
            await observer.close()
        await asyncio.gather(*flood)

    # The other namespace's reads were all answered while the flood's pages were stuck:
    # describes and result waits 200, the activity token's read 404 (no such activity).
    assert quiet == Counter({(200, None): 2 * QUIET, (404, "ActivityNotFound"): QUIET}), (quiet, noisy)
    # The flood's own reads waited for their share; every one that gave up said why and when
    # to come back: its share was full, or its page did not come within the bound.
    assert noisy[200] + noisy[503] == FLOOD, noisy
    causes = ("no database connection within", "the database did not answer a read within")
    for headers, body in unavailable:
        assert headers.get("Retry-After") == "1", (headers, body)
        assert body.get("limit") == "history_reads" or str(body.get("message")).startswith(causes), body


async def test_history_pages_read_their_run_and_events_together(small_pool: Cluster) -> None:
    """A page reads its run and its events on one connection: pages of one event follow each
    other to the end, a run with no row is 404 (engine.history, reads.history_page)."""
    async with await Client.connect(small_pool.url, namespace="default") as client:
        (wid,) = await _start(client, "paged", 1)
        handle = client.get_workflow_handle(wid)
        await handle.signal("poke")
        await handle.signal("poke")
        events = await eventually(lambda: _all_of(handle), what="the run's four events")
        assert [e["event_id"] for e in events] == [1, 2, 3, 4]
        assert events == await handle.history(page_size=1000)
        with pytest.raises(RPCError) as caught:
            await client.get_workflow_handle("no-such-workflow").history(page_size=1)
        assert (caught.value.status, caught.value.error_type) == (404, "WorkflowNotFound")


async def _all_of(handle: Any) -> list[dict[str, Any]] | None:
    events: list[dict[str, Any]] = await handle.history(page_size=1)
    return events if len(events) >= 4 else None


WAITS = 60  # result waits asked at once, half naming their run and half not


async def test_result_waits_outlast_a_stall_of_their_reads_without_503(small_pool: Cluster) -> None:
    """Many result waits whose reads of the run cannot be served for a while (each gives up
    within the read bound) keep waiting, holding no connection, and look again: none answers
    503 while its wait has time left. Before, each wait read its run alone, the share of
    result reads held two of them and every other wait gave up with 503 (engine.result)."""
    url = small_pool.url
    async with await Client.connect(url, namespace="default") as client:
        ids = await _start(client, "waited", WAITS // 2)
        runs = {wid: (await client.get_workflow_handle(wid).describe())["run_id"] for wid in ids}
    blocker = await asyncpg.connect(small_pool.settings.database_url)
    observer = await asyncpg.connect(small_pool.settings.database_url)
    answers: list[tuple[int, dict[str, Any]]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def wait(wid: str, run_id: str | None) -> None:
            params = {"wait_seconds": "4", **({"run_id": run_id} if run_id else {})}
            async with http.get(f"{url}/api/v1/namespaces/default/workflows/{wid}/result", params=params) as resp:
                answers.append((resp.status, await resp.json()))

        async def stuck_reads() -> set[Any]:
            return {r["query_start"] for r in await observer.fetch(
                "SELECT query_start FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%executions%'")}

        lock = blocker.transaction()
        await lock.start()
        try:
            await blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
            calls = [asyncio.ensure_future(wait(wid, runs[wid] if i % 2 else None))
                     for i in range(WAITS) for wid in [ids[i % len(ids)]]]
            first = min(await eventually(stuck_reads, what="result reads stuck on the lock"))
            # Held past the read bound: the stuck reads give up, then either every wait has
            # answered (503, as before) or a wait reads its run again, a bound after the first.

            async def looked_again_or_answered() -> bool:
                bound = timedelta(milliseconds=READ_TIMEOUT_MS)
                return len(answers) == WAITS or any(start - first >= bound for start in await stuck_reads())

            await eventually(looked_again_or_answered, what="a read of the run again, or every answer")
        finally:
            await lock.rollback()
            await blocker.close()
            await observer.close()
        await asyncio.gather(*calls)

    statuses = Counter(status for status, _ in answers)
    assert statuses == Counter({200: WAITS}), (statuses, [body for status, body in answers if status != 200][:3])
    assert all(body == {"status": "Running"} for _, body in answers)
