"""The sustained benchmark: N workflows through one long-lived `kadence dev`, in bursts.

    python -m benchmarks.bench --sustained 1000000 --burst 10000 --sdk-defaults --plot sustained.png

Every burst starts ``--burst`` workflows at once (no client cap) and records its throughput
and CPU per workflow; a sampler records the resident memory of every process (server,
broker, PostgreSQL with its backends, worker, client) once a second. The run ends with the
throughput of the first and the last window (``--window`` workflows, default N/10) and a
PNG of throughput, RSS and PostgreSQL's tables over time (matplotlib, the ``bench`` extra).
After every burst it reads PostgreSQL's tables (benchmarks/pg_health.py): their size and
the dead rows they carry, which autovacuum must keep from growing, and the server's share of
work during the burst: WAL per workflow, checkpoints (those asked for by WAL volume bring
full-page writes), pages the backends wrote themselves and read from outside shared buffers,
autovacuums.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

from .pg_health import server_activity, table_health
from .pg_health import summary as pg_summary

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
    tables: list[dict[str, Any]] = []  # PostgreSQL's tables after each burst
    try:
        done, i = 0, 0
        activity = await server_activity(bench.dsn) if bench.dsn else None
        while done < args.sustained:
            n = min(args.burst, args.sustained - done)
            elapsed, cpu = await bench.burst(n, f"s{i}-{uuid.uuid4().hex[:6]}")
            done += n
            row = {"burst": i, "n": n, "done": done, "t": time.monotonic() - t_start, "seconds": elapsed,
                   "wf_per_s": n / elapsed, "cpu_ms_per_wf": {k: v * 1000 / n for k, v in cpu.items()}}
            if args.idle_probe > 0:
                row["idle_cpu_ms_per_s"] = await idle_cpu(bench, args.idle_probe)
            bursts.append(row)
            bench.record(bench="sustained_burst", **row)
            pg = ""
            if bench.dsn and activity is not None:
                before, activity = activity, await server_activity(bench.dsn)
                server = activity.per_workflow(before, n)
                health = await table_health(bench.dsn)
                tables.append({"t": row["t"], "done": done, **pg_summary(health)})
                bench.record(bench="sustained_pg", burst=i, **tables[-1],
                             tables=[h.as_json() for h in health], server=server)
                pg = (f"; PostgreSQL {tables[-1]['size_mb']:,.0f} MB, dead rows {tables[-1]['dead_ratio']:.1%} "
                      f"(most: {tables[-1]['worst_table']} {tables[-1]['worst_dead_ratio']:.1%}), "
                      f"WAL {server['wal_kb_per_wf']:.1f} KB/wf, reads {server['blks_read_per_wf']:.2f}/wf, "
                      f"backend writes {server['backend_writes_per_wf']}/wf, checkpoints "
                      f"{server['checkpoints_timed']} timed {server['checkpoints_req']} by WAL, "
                      f"autovacuums {server['autovacuums']}")
            print(f"burst {i}: {done:,} done, {row['wf_per_s']:,.0f} wf/s, "
                  f"machine {row['cpu_ms_per_wf']['machine']:.2f} ms CPU/wf, RSS MB "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in rss[-1].items() if k != "t") + pg, flush=True)
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
               "rss_mb_max": {k: max(r[k] for r in rss) for k in rss[0] if k != "t"},
               "pg_first": tables[0] if tables else None, "pg_last": tables[-1] if tables else None,
               "pg_dead_ratio_max": max((t["dead_ratio"] for t in tables), default=None),
               **cpu_drift(bursts, window)}
    bench.record(bench="sustained", n=args.sustained, burst=args.burst, **summary)
    print(f"first {window:,}: {first:,.0f} wf/s; last {window:,}: {last:,.0f} wf/s; last/first {last / first:.3f}")
    print("RSS MB first -> last (max): " + ", ".join(
        f"{k} {summary['rss_mb_first'][k]:,.0f} -> {summary['rss_mb_last'][k]:,.0f} ({summary['rss_mb_max'][k]:,.0f})"
        for k in summary["rss_mb_first"]))
    print("CPU ms per workflow first -> last (drift): " + ", ".join(
        f"{k} {summary['cpu_ms_per_wf_first'][k]:.3f} -> {summary['cpu_ms_per_wf_last'][k]:.3f} "
        f"({summary['cpu_drift'][k]:.2f})" for k in summary["cpu_drift"]))
    if tables:
        print(f"PostgreSQL first -> last: {tables[0]['size_mb']:,.0f} -> {tables[-1]['size_mb']:,.0f} MB, "
              f"dead rows {tables[0]['dead_ratio']:.1%} -> {tables[-1]['dead_ratio']:.1%} "
              f"(max {summary['pg_dead_ratio_max']:.1%})")
    plot(bursts, rss, tables, args.plot)
    print(f"plot: {args.plot}")


def _window(bursts: list[dict[str, Any]], window: int, *, first: bool) -> float:
    """Workflows per second over the first (or last) bursts that hold ``window`` workflows."""
    n = seconds = 0.0
    for b in bursts if first else reversed(bursts):
        n, seconds = n + b["n"], seconds + b["seconds"]
        if n >= window:
            break
    return n / seconds


def cpu_drift(bursts: list[dict[str, Any]], window: int) -> dict[str, dict[str, float]]:
    """Each role's CPU per workflow over the first and the last bursts holding ``window``
    workflows, and last over first. A process that slows as workflows accumulate shows a
    drift above 1; so does a machine that got busier (contention makes every process's
    work cost more), which the worker's and the client's drifts, whose work per workflow
    does not grow, show beside it."""
    def over(chosen: list[dict[str, Any]]) -> dict[str, float]:
        n = sum(b["n"] for b in chosen)
        return {k: sum(b["cpu_ms_per_wf"][k] * b["n"] for b in chosen) / n for k in chosen[0]["cpu_ms_per_wf"]}

    def take(ordered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chosen, n = [], 0
        for b in ordered:
            chosen.append(b)
            n += b["n"]
            if n >= window:
                break
        return chosen

    first, last = over(take(bursts)), over(take(list(reversed(bursts))))
    return {"cpu_ms_per_wf_first": first, "cpu_ms_per_wf_last": last,
            "cpu_drift": {k: last[k] / first[k] for k in first if first[k] > 0}}


async def idle_cpu(bench: Bench, seconds: float) -> dict[str, float]:
    """Each role's CPU milliseconds per second while no workflow runs (after a second for
    the burst's stragglers): the background work (periodic loops, log-end looks, fetch
    waits) that a growing per-workflow figure is otherwise mixed with."""
    await asyncio.sleep(1.0)
    before, t0 = bench.roles.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = bench.roles.cpu(), time.monotonic() - t0
    return {k: (after[k] - before[k]) * 1000 / elapsed for k in after if k != "machine"}


def plot(bursts: list[dict[str, Any]], rss: list[dict[str, Any]], tables: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    fig, (top, bottom, pg) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    top.plot([b["t"] for b in bursts], [b["wf_per_s"] for b in bursts], marker="o")
    top.set_ylabel("workflows / s (per burst)")
    top.set_ylim(bottom=0)
    top.grid(True)
    for role in [k for k in rss[0] if k != "t"]:
        bottom.plot([r["t"] for r in rss], [r[role] for r in rss], label=role)
    bottom.set_ylabel("RSS (MB)")
    bottom.legend()
    bottom.grid(True)
    pg.plot([t["t"] for t in tables], [t["size_mb"] for t in tables], marker=".", label="tables (MB)")
    pg.set_ylabel("PostgreSQL tables (MB)")
    pg.set_xlabel("seconds since start")
    pg.grid(True)
    dead = pg.twinx()
    dead.plot([t["t"] for t in tables], [100 * t["dead_ratio"] for t in tables], color="tab:red", marker=".")
    dead.set_ylabel("dead rows (%)", color="tab:red")
    dead.set_ylim(bottom=0)
    fig.suptitle("Kadence sustained run: throughput, memory and PostgreSQL's tables over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
