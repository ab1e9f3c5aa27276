"""One namespace floods starts over HTTP while another starts at a modest rate: how long do the
quiet namespace's starts take, with and without a limit on the flooding namespace?

    python -m benchmarks.tenant_flood --flood-limit 0      # no limits at all (as before them)
    python -m benchmarks.tenant_flood --flood-limit 500    # namespace "flood" limited to 500/s

Starts ``kadence dev`` (with ``KADENCE_NAMESPACE_RPS=0``, so only the override given here
limits), registers namespaces ``flood`` and ``quiet``, and, with ``--flood-limit`` above 0,
sets ``flood``'s request rate to it (``kadence namespace update flood --rps-limit N``). The
quiet namespace starts one workflow every 1/``--quiet-rate`` seconds throughout, each alone,
and records how long each start call took; after ``--warmup`` seconds a second process
starts ``--flood`` workflows in ``flood`` with ``--flood-clients`` in flight (the SDK's
batched starts, retried after a 429 within the client's budget). No worker runs: a start is
done when history has taken it. Prints the quiet starts' latency before and during the flood,
and the flood's own outcome, then one JSON line (also appended to ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kadence import Client, ResourceExhaustedError
from kadence.exceptions import RPCError
from services.common import loop as _loop

from .bench import ROOT, _pct, spawn, spawn_dev, stop_processes


async def _flood(args: argparse.Namespace) -> None:
    """The flooding process: ``--flood`` starts in namespace flood, as fast as the client goes."""
    client = await Client.connect(args.target, namespace="flood")
    sem = asyncio.Semaphore(args.flood_clients)
    done = {"started": 0, "throttled": 0, "failed": 0}

    async def one() -> None:
        async with sem:
            try:
                await client.start_workflow("Nobody", id=f"flood-{uuid.uuid4().hex}", task_queue="nobody")
                done["started"] += 1
            except ResourceExhaustedError:
                done["throttled"] += 1  # still over the limit when the retry budget ran out
            except RPCError:
                done["failed"] += 1

    began = time.perf_counter()
    print("flood begins", flush=True)
    try:
        await asyncio.gather(*(one() for _ in range(args.flood)))
    finally:
        await client.close()
    print(json.dumps({**done, "seconds": round(time.perf_counter() - began, 2)}), flush=True)


async def _quiet(client: Client, rate: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """One start every 1/rate s, each alone; (when it began, how long it took) in ``samples``."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def one() -> None:
        began = loop.time()
        await client.start_workflow("Nobody", id=f"quiet-{uuid.uuid4().hex}", task_queue="nobody")
        samples.append((began, loop.time() - began))

    next_at = loop.time()
    while not stop.is_set():
        task = asyncio.ensure_future(one())
        running.add(task)
        task.add_done_callback(running.discard)
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    await asyncio.gather(*running, return_exceptions=True)


def _stats(latencies: list[float]) -> dict[str, float | int | None]:
    ms = sorted(x * 1000 for x in latencies)
    if not ms:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": round(_pct(ms, 50), 1), "p95_ms": round(_pct(ms, 95), 1),
            "p99_ms": round(_pct(ms, 99), 1), "max_ms": round(ms[-1], 1)}


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kadence-flood-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "KADENCE_NAMESPACE_RPS": "0"}
    try:
        server, target = await spawn_dev(tmp, env)
        processes.append(server)
        async with await Client.connect(target, batch_calls=False) as admin:
            for ns in ("flood", "quiet"):
                await admin.create_namespace(ns, retention="1d")
            if args.flood_limit > 0:
                await admin.update_namespace("flood", limits={"rps": args.flood_limit})
        loop = asyncio.get_running_loop()
        samples: list[tuple[float, float]] = []
        stop = asyncio.Event()
        async with await Client.connect(target, namespace="quiet") as quiet:
            quieting = asyncio.ensure_future(_quiet(quiet, args.quiet_rate, samples, stop))
            await asyncio.sleep(args.warmup)
            flood_began = loop.time()
            flood, _ = await spawn("benchmarks.tenant_flood", [
                "--role", "flood", "--target", target, "--flood", str(args.flood),
                "--flood-clients", str(args.flood_clients)], tmp / "flood.log", "flood begins", cwd=ROOT, env=env)
            processes.append(flood)
            with contextlib.suppress(TimeoutError):  # the flood is stopped below if it runs on
                await asyncio.wait_for(asyncio.to_thread(flood.wait), args.max_seconds)
            flood_ended = loop.time()
            stop.set()
            await quieting
        outcome_line = (tmp / "flood.log").read_text().strip().splitlines()[-1]
        outcome = json.loads(outcome_line) if outcome_line.startswith("{") else {"unfinished": outcome_line}
    finally:
        stop_processes(processes)
        shutil.rmtree(tmp, ignore_errors=True)
    before = [d for t, d in samples if t < flood_began]
    during = [d for t, d in samples if flood_began <= t < flood_ended]
    figures: dict[str, Any] = {"benchmark": "tenant_flood", "flood_limit_rps": args.flood_limit,
                               "flood_starts": args.flood, "flood_clients": args.flood_clients,
                               "quiet_rate": args.quiet_rate, "quiet_before": _stats(before),
                               "quiet_during": _stats(during), "flood": outcome}
    print(f"flood limit {args.flood_limit or 'none'}: quiet starts before the flood {figures['quiet_before']},"
          f" during it {figures['quiet_during']}; flood {outcome}")
    line = json.dumps(figures)
    print(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["measure", "flood"], default="measure", help=argparse.SUPPRESS)
    parser.add_argument("--target", default="", help=argparse.SUPPRESS)
    parser.add_argument("--flood", type=int, default=20_000, help="starts the flooding namespace makes")
    parser.add_argument("--flood-clients", type=int, default=2000, help="of them in flight at once")
    parser.add_argument("--flood-limit", type=float, default=500.0,
                        help="the flooding namespace's request rate limit (0: none)")
    parser.add_argument("--quiet-rate", type=float, default=20.0, help="starts a second in the quiet namespace")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of quiet starts before the flood")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop measuring after this long")
    parser.add_argument("--out", default=None, help="append the figures to this file as a JSON line")
    args = parser.parse_args()
    if args.role == "flood":
        _loop.run(_flood(args))
    else:
        _loop.run(main(args))


if __name__ == "__main__":
    cli()
