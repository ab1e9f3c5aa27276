"""Visibility lag: how long after a run closes it is listable as closed.

    python -m benchmarks.visibility              # starts `kadence dev` and a worker, 10,000 workflows
    python -m benchmarks.visibility --n 1000 --out results.jsonl

Starts ``--n`` one-activity workflows at once and, meanwhile, lists the runs closed lately
every ``--every`` seconds (``ExecutionStatus = 'Completed' AND CloseTime >= ...``). A run's
lag is the time it was first listed minus its close time (both this machine's clock), so
the figures carry the polling interval as resolution. Prints p50/p95/p99/max and how many
runs were never seen closed (none, unless the projection fell behind by more than the
look-back window), then the same as one JSON line (``figures``), also appended to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kadence import Client
from services.common import loop as _loop

from .bench import ROOT, WORKER_TASKS_PER_POLL, WORKER_WORKFLOW_TASKS, _pct, spawn, spawn_dev, stop_processes
from .workflows import OneActivity

LOOK_BACK_MS = 3_000  # rows may become listable out of close order (partitions lag apart)


async def _watch(client: Client, queue: str, seen: dict[str, float], stop: asyncio.Event, every: float,
                 all_seen: asyncio.Event, n: int) -> None:
    newest = 0
    while not stop.is_set():
        since = datetime.fromtimestamp(max(0, newest - LOOK_BACK_MS) / 1000, tz=UTC).isoformat()
        query = f"TaskQueue = '{queue}' AND ExecutionStatus = 'Completed' AND CloseTime >= '{since}' ORDER BY CloseTime"
        now = time.time()
        async for run in client.list_workflows(query, page_size=1000):
            if run.run_id not in seen and run.close_time is not None:
                close_ms = run.close_time.timestamp() * 1000
                seen[run.run_id] = now * 1000 - close_ms
                newest = max(newest, int(close_ms))
        if len(seen) >= n:
            all_seen.set()
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kadence-vis-bench-"))
    processes = []
    env = {**os.environ}
    try:
        server, target = await spawn_dev(tmp, env)
        processes.append(server)
        worker, _ = await spawn("benchmarks.worker", [
            "--target", target, "--workflow-tasks", str(WORKER_WORKFLOW_TASKS),
            "--tasks-per-poll", str(WORKER_TASKS_PER_POLL)], tmp / "worker.log", "worker ready", cwd=ROOT, env=env)
        processes.append(worker)
        client = await Client.connect(target)
        try:
            seen: dict[str, float] = {}
            stop, all_seen = asyncio.Event(), asyncio.Event()
            watcher = asyncio.create_task(_watch(client, "bench", seen, stop, args.every, all_seen, args.n))
            started = time.perf_counter()
            sem = asyncio.Semaphore(args.clients)

            async def one(i: int) -> str:
                async with sem:
                    handle_id = f"vis-{uuid.uuid4().hex}"
                    await client.execute_workflow(OneActivity.run, i, id=handle_id, task_queue="bench")
                    return handle_id
            await asyncio.gather(*(one(i) for i in range(args.n)))
            elapsed = time.perf_counter() - started
            try:
                await asyncio.wait_for(all_seen.wait(), 60)
            except TimeoutError:
                pass  # reported as never listed
            stop.set()
            await watcher
        finally:
            await client.close()
    finally:
        stop_processes(processes)
        shutil.rmtree(tmp, ignore_errors=True)
    lags = sorted(seen.values())
    print(f"{args.n} workflows in {elapsed:.1f} s ({args.n / elapsed:.0f}/s); listed closed: {len(lags)}"
          f" (never: {args.n - len(lags)}); polled every {args.every * 1000:.0f} ms")
    if lags:
        print(f"close -> listable: p50 {_pct(lags, 50):.0f} ms, p95 {_pct(lags, 95):.0f} ms,"
              f" p99 {_pct(lags, 99):.0f} ms, max {lags[-1]:.0f} ms")
    line = json.dumps(figures(args.n, elapsed, lags, args.every))
    print(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


def figures(n: int, elapsed_s: float, lags_ms: list[float], every_s: float) -> dict[str, Any]:
    """The run's figures as one JSON object: close-to-listable lag percentiles in ms (None if
    no run was listed), how many runs were never listed, the start rate, the list interval."""
    lags = sorted(lags_ms)

    def pct(q: float) -> float | None:
        return round(_pct(lags, q), 1) if lags else None
    return {"benchmark": "visibility_lag", "workflows": n, "listed": len(lags), "never_listed": n - len(lags),
            "workflows_per_second": round(n / elapsed_s, 1) if elapsed_s > 0 else None,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "max_ms": round(lags[-1], 1) if lags else None, "poll_interval_ms": round(every_s * 1000)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="workflows")
    parser.add_argument("--clients", type=int, default=1000, help="workflows in flight at once")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between lists")
    parser.add_argument("--out", default=None, help="append the figures to this file as a JSON line")
    _loop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
