"""Where a one-activity workflow's latency goes between separate services.

    python -m benchmarks.hops --n 100     # history, matching and frontend as processes of their own

Runs ``--n`` sequential one-activity workflows against ``--topology services`` (as
benchmarks/bench.py starts it), then reads ``kadence.requests`` and ``kadence.tasks`` back
and prints, per hop, the median time between consecutive records of the same workflow by
their broker timestamps (milliseconds: the producer's clock), from the client's call to its
answer. A hop from a task to the next request is matching, the worker and the frontend; one
from a request to the next task is history (fetch, batch, commit, relay). Matching's
``task_notices`` counts and history's command and reply notice counts (docs/colocation.md)
are printed too. With task notices on, a task reaches its worker from the notice sent at the
commit, and the relay publishes its record later (gathered with the next records): a task
record's timestamp then marks its publication, not the hop, and may come after the worker's
answer.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections import defaultdict

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from kadence_protocol import avro
from kadence_protocol.kafka_security import client_options
from services.common import loop as _loop
from services.common.command_notices import owner_address
from services.common.kafka import REQUESTS, TASKS

from .bench import Bench
from .workflows import OneActivity


async def _records(bootstrap: str, partitions: int, wanted: set[str]) -> dict[str, list[tuple[float, str]]]:
    """Per workflow id in ``wanted``: (broker timestamp in s, "topic:record") of its records."""
    found: dict[str, list[tuple[float, str]]] = defaultdict(list)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options(None))
    await consumer.start()
    try:
        for topic in (REQUESTS, TASKS):  # both have --shards partitions (bench.py)
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            for _ in range(10_000):  # bounded: until every partition is read to its end
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    for r in records:
                        name, rec = avro.decode(r.value or b"")
                        wid = rec.get("workflow_id") or ""
                        if wid in wanted:
                            found[wid].append((r.timestamp / 1000, f"{topic.split('.')[-1]}:{name}"))
    finally:
        await consumer.stop()
    return found


async def _notice_counts(dsn: str) -> list[object]:
    conn = await asyncpg.connect(dsn)
    try:
        addresses = sorted({r["address"] for r in await conn.fetch("SELECT address FROM matching_owners")})
    finally:
        await conn.close()
    counts = []
    async with aiohttp.ClientSession() as http:
        for address in addresses:
            async with http.get(address + "/internal/health") as resp:
                counts.append((await resp.json()).get("task_notices"))
    return counts


async def _history_notice_counts(dsn: str) -> list[object]:
    conn = await asyncpg.connect(dsn)
    try:
        owners = sorted({r["owner"] for r in await conn.fetch("SELECT owner FROM shards")})
    finally:
        await conn.close()
    counts = []
    async with aiohttp.ClientSession() as http:
        for address in filter(None, map(owner_address, owners)):
            async with http.get(address + "/internal/notices") as resp:
                counts.append(await resp.json())
    return counts


async def main(args: argparse.Namespace) -> None:
    bench = Bench(argparse.Namespace(target=None, dsn=None, topology="services", shards=args.shards,
                                     sdk_defaults=False, worker_workflow_tasks=200, worker_tasks_per_poll=50,
                                     out=None, clients=100))
    await bench.start()
    try:
        for i in range(args.warmup):
            await bench.client.execute_workflow(OneActivity.run, i, id=f"warm-{uuid.uuid4().hex}", task_queue="bench")
        spans: dict[str, tuple[float, float]] = {}
        for i in range(args.n):
            wid = f"hops-{i}-{uuid.uuid4().hex[:8]}"
            t0 = time.time()
            await bench.client.execute_workflow(OneActivity.run, i, id=wid, task_queue="bench")
            spans[wid] = (t0, time.time())
        assert bench.broker is not None and bench.dsn is not None
        found = await _records(bench.broker.bootstrap, args.shards, set(spans))
        hops: dict[str, list[float]] = defaultdict(list)
        for wid, (t0, t1) in spans.items():
            prev, prev_name = t0, "client"
            for at, name in sorted(found.get(wid, [])):
                hops[f"{prev_name} -> {name}"].append((at - prev) * 1000)
                prev, prev_name = at, name
            hops[f"{prev_name} -> client answered"].append((t1 - prev) * 1000)
        total = [(t1 - t0) * 1000 for t0, t1 in spans.values()]
        print(f"workflow p50 {statistics.median(total):.1f} ms over {len(total)}")
        for hop, ms in hops.items():
            print(f"{statistics.median(ms):7.1f} ms  (n={len(ms)})  {hop}")
        print("matching task notices:", await _notice_counts(bench.dsn))
        print("history command and reply notices:", await _history_notice_counts(bench.dsn))
    finally:
        await bench.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    _loop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
