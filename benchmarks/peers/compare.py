"""Kadence against Restate on one machine in one sitting, alternated phase by phase.

    python -m benchmarks.peers.restate.install          # once: the peer into a scratch directory
    python -m benchmarks.peers.compare --rounds 3 --out peers.jsonl

Both engines stay up for the whole sitting, as users run them: a `kadence dev` with a worker
at the SDK's default settings (``benchmarks.worker --sdk-defaults``), and a Restate server
with the same workloads on its Python SDK served by hypercorn (``restate/service.py``). Every
round runs each phase on both engines, the one going first alternating from round to round:
throughput of N one-activity workflows all in flight at once (N=1,000 and 10,000; no client
cap) with the CPU per workflow (the sum of the engine's processes' CPU times, client
included, and the whole machine's), latency of 100 sequential workflows, and the wall-clock
lateness of 100 one-second timers started at once. It prints each engine's medians over the
rounds and the median of the per-round ratios Kadence / Restate, and appends every
measurement as a JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import uuid
from pathlib import Path
from typing import Any

from kadence import Client
from services.cli import DEV_SHARDS
from services.common import loop as _loop

from ..bench import Bench
from .restate.install import DEFAULT_DIR
from .restate.peer import RestatePeer

ENGINES = ("kadence", "restate")


class Sitting:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.kadence = Bench(argparse.Namespace(
            target=None, dsn=None, topology="dev", shards=DEV_SHARDS, sdk_defaults=True, clients=0,
            worker_workflow_tasks=0, worker_tasks_per_poll=0, out=None))
        self.restate = RestatePeer(args.restate_dir)
        # Descriptors for both clients' connections at once (N each), or release between phases.
        self.cold = resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * max(args.n) + 2000

    def record(self, **row: Any) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.args.out:
            with open(self.args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    async def release_others(self, engine: str) -> None:
        """Close the other engine's kept-alive connections when this process cannot hold both
        engines' N at once: then every phase opens its connections anew, on both engines."""
        if not self.cold:
            return
        if engine == "kadence":
            await self.restate.reconnect()
        else:
            await self.kadence.client.close()
            self.kadence.client = await Client.connect(self.kadence.target)

    async def burst(self, engine: str, n: int, rnd: int) -> None:
        await self.release_others(engine)
        prefix = f"tp{n}-{rnd}-{uuid.uuid4().hex[:6]}"
        if engine == "kadence":
            elapsed, cpu = await self.kadence.burst(n, prefix)
        else:
            elapsed, cpu = await self.restate.burst(n, prefix)
        per_wf = {k: v * 1000 / n for k, v in cpu.items()}
        per_wf["processes"] = sum(v for k, v in per_wf.items() if k != "machine")
        self.record(engine=engine, bench="throughput", n=n, round=rnd, seconds=elapsed, wf_per_s=n / elapsed,
                    cpu_ms_per_wf=per_wf)

    async def latency(self, engine: str, rnd: int) -> None:
        await self.release_others(engine)
        n = self.args.latency_n
        if engine == "kadence":
            await self.kadence.latency(n, rnd)
            figures = {k: self.kadence.results[-1][k] for k in ("p50_ms", "p95_ms", "p99_ms")}
        else:
            figures = await self.restate.latency(n)
        self.record(engine=engine, bench="latency", n=n, round=rnd, **figures)

    async def timers(self, engine: str, rnd: int) -> None:
        await self.release_others(engine)
        n = self.args.timer_n
        if engine == "kadence":
            await self.kadence.timers(n, rnd)
            keys = ("p50_ms", "p99_ms", "min_ms", "max_ms", "early", "replayed")
            figures = {k: self.kadence.results[-1][k] for k in keys}
        else:
            figures = await self.restate.timers(n)
        self.record(engine=engine, bench="timers", n=n, round=rnd, **figures)

    async def run(self) -> None:
        await self.kadence.start()
        if self.cold:
            print("too few file descriptors for both engines' connections at once: each phase opens its own",
                  flush=True)
        try:
            await self.restate.start()
            try:
                for engine in ENGINES:  # warm-up, not measured: connections open, caches warm
                    await self.warm(engine)
                for rnd in range(self.args.rounds):
                    order = ENGINES if rnd % 2 == 0 else ENGINES[::-1]
                    for n in self.args.n:
                        for engine in order:
                            await self.burst(engine, n, rnd)
                    for engine in order:
                        await self.latency(engine, rnd)
                    for engine in order:
                        await self.timers(engine, rnd)
                    print(f"round {rnd + 1}/{self.args.rounds} done", flush=True)
            finally:
                await self.restate.stop()
        finally:
            await self.kadence.stop()
        print("\n".join(summary(self.rows)))

    async def warm(self, engine: str) -> None:
        await self.release_others(engine)
        n = max(self.args.warmup, *self.args.n)
        if engine == "kadence":
            await self.kadence.burst(n, f"warm-{uuid.uuid4().hex[:6]}")
        else:
            await self.restate.burst(n, f"warm-{uuid.uuid4().hex[:6]}")


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Each engine's median over the rounds and the median of the per-round ratios K/R."""
    def metric(bench: str, key: str, sub: str | None = None, n: int | None = None) -> tuple[str, ...]:
        per: dict[str, dict[int, float]] = {e: {} for e in ENGINES}
        for r in rows:
            if r["bench"] == bench and (n is None or r["n"] == n):
                per[r["engine"]][r["round"]] = r[key][sub] if sub else r[key]
        rounds = sorted(set(per["kadence"]) & set(per["restate"]))
        if not rounds:
            return ()
        ratios = [per["kadence"][i] / per["restate"][i] if per["restate"][i] else float("nan") for i in rounds]
        kad, res = (statistics.median(per[e][i] for i in rounds) for e in ENGINES)
        label = f"{bench}{f' N={n}' if n else ''} {sub or key}"
        return (f"{label:<42} {kad:>10,.2f} {res:>10,.2f} {statistics.median(ratios):>7.2f}"
                f"  ({min(ratios):.2f}-{max(ratios):.2f})",)

    lines = ["", f"{'median over rounds':<42} {'Kadence':>10} {'Restate':>10} {'K/R':>7}  (per-round range)"]
    for n in sorted({r["n"] for r in rows if r["bench"] == "throughput"}):
        lines += metric("throughput", "wf_per_s", n=n)
        lines += metric("throughput", "cpu_ms_per_wf", "processes", n=n)
        lines += metric("throughput", "cpu_ms_per_wf", "machine", n=n)
    for key in ("p50_ms", "p99_ms"):
        lines += metric("latency", key)
    for key in ("p50_ms", "p99_ms", "min_ms"):
        lines += metric("timers", key)
    return lines


def _open_files(wanted: int) -> None:
    """Both clients keep their connections open (N=10,000 at once is 10,000 per engine, over
    HTTP/1.1): raise this process's descriptor limit, the hard one too where allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000], help="throughput sizes, all at once")
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--timer-n", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--restate-dir", type=Path, default=DEFAULT_DIR,
                        help=f"the scratch directory of benchmarks.peers.restate.install (default {DEFAULT_DIR})")
    parser.add_argument("--out", help="append every measurement as a JSON line to this file")
    args = parser.parse_args()
    _open_files(3 * max(args.n) + 1000)
    _loop.run(Sitting(args).run())


if __name__ == "__main__":
    cli()
