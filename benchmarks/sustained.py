"""The sustained benchmark: N workflows through one long-lived `kadence dev`, in bursts.

    python -m benchmarks.bench --sustained 1000000 --burst 10000 --sdk-defaults --plot sustained.png

Every burst starts ``--burst`` workflows at once (no client cap) and records its throughput
and CPU per workflow; a sampler records the resident memory of every process (server,
broker, PostgreSQL with its backends, worker, client) once a second. The run ends with the
throughput of the first and the last window (``--window`` workflows, default N/10) and a
PNG of throughput and RSS over time (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bench import Bench

RSS_EVERY_S = 1.0


async def sustained(bench: Bench, args: argparse.Namespace) -> None:
    await bench.start()
    await bench.burst(args.warmup, f"warm-{uuid.uuid4().hex[:6]}")  # connections open, caches warm: not measured
    t_start = time.monotonic()
    rss: list[dict[str, Any]] = []

    async def sample() -> None:
        while True:
            row = {"t": time.monotonic() - t_start, **bench.roles.rss_mb()}
            rss.append(row)
            bench.record(bench="sustained_rss", **row)
            await asyncio.sleep(RSS_EVERY_S)

    sampler = asyncio.create_task(sample())
    bursts: list[dict[str, Any]] = []
    try:
        done, i = 0, 0
        while done < args.sustained:
            n = min(args.burst, args.sustained - done)
            elapsed, cpu = await bench.burst(n, f"s{i}-{uuid.uuid4().hex[:6]}")
            done += n
            row = {"burst": i, "n": n, "done": done, "t": time.monotonic() - t_start, "seconds": elapsed,
                   "wf_per_s": n / elapsed, "cpu_ms_per_wf": {k: v * 1000 / n for k, v in cpu.items()}}
            bursts.append(row)
            bench.record(bench="sustained_burst", **row)
            print(f"burst {i}: {done:,} done, {row['wf_per_s']:,.0f} wf/s, "
                  f"machine {row['cpu_ms_per_wf']['machine']:.2f} ms CPU/wf, RSS MB "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in rss[-1].items() if k != "t"), flush=True)
            i += 1
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await bench.stop()
    window = max(args.window or args.sustained // 10, args.burst)
    first, last = _window(bursts, window, first=True), _window(bursts, window, first=False)
    summary = {"window": window, "first_wf_per_s": first, "last_wf_per_s": last, "last_over_first": last / first,
               "rss_mb_first": {k: v for k, v in rss[0].items() if k != "t"},
               "rss_mb_last": {k: v for k, v in rss[-1].items() if k != "t"},
               "rss_mb_max": {k: max(r[k] for r in rss) for k in rss[0] if k != "t"}}
    bench.record(bench="sustained", n=args.sustained, burst=args.burst, **summary)
    print(f"first {window:,}: {first:,.0f} wf/s; last {window:,}: {last:,.0f} wf/s; last/first {last / first:.3f}")
    print("RSS MB first -> last (max): " + ", ".join(
        f"{k} {summary['rss_mb_first'][k]:,.0f} -> {summary['rss_mb_last'][k]:,.0f} ({summary['rss_mb_max'][k]:,.0f})"
        for k in summary["rss_mb_first"]))
    plot(bursts, rss, args.plot)
    print(f"plot: {args.plot}")


def _window(bursts: list[dict[str, Any]], window: int, *, first: bool) -> float:
    """Workflows per second over the first (or last) bursts that hold ``window`` workflows."""
    n = seconds = 0.0
    for b in bursts if first else reversed(bursts):
        n, seconds = n + b["n"], seconds + b["seconds"]
        if n >= window:
            break
    return n / seconds


def plot(bursts: list[dict[str, Any]], rss: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot([b["t"] for b in bursts], [b["wf_per_s"] for b in bursts], marker="o")
    top.set_ylabel("workflows / s (per burst)")
    top.set_ylim(bottom=0)
    top.grid(True)
    for role in [k for k in rss[0] if k != "t"]:
        bottom.plot([r["t"] for r in rss], [r[role] for r in rss], label=role)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("seconds since start")
    bottom.legend()
    bottom.grid(True)
    fig.suptitle("Kadence sustained run: throughput and memory over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
