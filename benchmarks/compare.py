"""Compare two checkouts of Kadence on one machine, side by side, interleaved.

    python -m benchmarks.compare /path/to/checkout-a /path/to/checkout-b
    python -m benchmarks.compare ../kadence-main . --latency-n 600 --timer-bursts 8

On a machine whose speed drifts (a shared virtual machine can move by a factor of two
within an hour), two benchmark runs one after the other compare the hours, not the code.
So this starts one `kadence dev` and one benchmark worker from each checkout, both at once,
and alternates between them: sequential workflows one by one (A, B, B, A, A, B, ...) for
start-to-result latency, bursts of 1,000 workflows started at once for throughput, and
bursts of 100 one-second timers for wake-up lateness, and (``--same-second N``) bursts of N
runs sleeping to one wall-clock moment (bench's same-second mode). Both sides meet the same moments of
the machine. It prints each side's figures and the median of the per-pair ratios B/A
(for latency and lateness below 1, for throughput above 1: B is better).

Each checkout runs with its own code (its directory first on PYTHONPATH) and this
checkout's Python environment; the client is this checkout's SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from kadence import Client
from services.common import loop as _loop
from services.common.embedded import free_port

from .bench import WORKER_TASKS_PER_POLL, WORKER_WORKFLOW_TASKS, _pct, same_second_lateness, spawn, stop_processes
from .workflows import OneActivity, OneTimer, SleepUntil

_T = TypeVar("_T")


@dataclass
class Side:
    name: str
    checkout: Path
    client: Client
    processes: list[subprocess.Popen[bytes]]
    target: str = ""


async def _start(name: str, checkout: Path, tmp: Path, sdk_defaults: bool = False) -> Side:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH")) if p)}
    port, kafka_port = free_port(), free_port()
    processes = []
    try:
        server, _ = await spawn("kadence.cli", [
            "dev", "--data-dir", str(tmp / f"{name}-data"), "--port", str(port), "--kafka-port", str(kafka_port)],
            tmp / f"{name}-server.log", "Kadence is running", cwd=checkout, env=env)
        processes.append(server)
        target = f"http://127.0.0.1:{port}"
        # --sdk-defaults: each checkout's Worker as a user writes it (its own defaults).
        tuning = ["--sdk-defaults"] if sdk_defaults else [
            "--workflow-tasks", str(WORKER_WORKFLOW_TASKS), "--tasks-per-poll", str(WORKER_TASKS_PER_POLL)]
        worker, _ = await spawn("benchmarks.worker", ["--target", target, *tuning],
            tmp / f"{name}-worker.log", "worker ready", cwd=checkout, env=env)
        processes.append(worker)
        return Side(name, checkout, await Client.connect(target), processes, target)
    except BaseException:
        stop_processes(processes)
        raise


async def _latency(side: Side) -> float:
    started = time.perf_counter()
    await side.client.execute_workflow(OneActivity.run, 1, id=f"cmp-{uuid.uuid4().hex}", task_queue="bench")
    return (time.perf_counter() - started) * 1000


def _process_cpu(side: Side, index: int) -> float:
    """CPU seconds so far of one of a side's own processes alone: ``processes`` is its
    `kadence dev` (the one process that cannot use more than one core; its broker and
    PostgreSQL are processes of their own), then its benchmark worker (the SDK's cost)."""
    with contextlib.suppress(psutil.Error, IndexError):
        t = psutil.Process(side.processes[index].pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def _server_cpu(side: Side) -> float:
    return _process_cpu(side, 0)


def _worker_cpu(side: Side) -> float:
    return _process_cpu(side, 1)


def _cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in {p.pid: p for p in procs}.values():
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def _broker_cpu(side: Side) -> float:
    """CPU seconds so far of the broker `kadence dev` started (its children)."""
    with contextlib.suppress(psutil.Error, IndexError):
        return _cpu_of(psutil.Process(side.processes[0].pid).children(recursive=True))
    return 0.0


def _postgres_cpu(side: Side, tmp: Path) -> float:
    """CPU seconds so far of the side's PostgreSQL (postmaster and backends)."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid_file = tmp / f"{side.name}-data" / "postgres" / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return _cpu_of([postmaster, *postmaster.children(recursive=True)])
    return 0.0


def _side_cpu(side: Side, tmp: Path) -> float:
    """CPU seconds so far of one side's server (with its broker), worker and PostgreSQL."""
    procs: list[psutil.Process] = []
    for p in side.processes:
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(p.pid)
            procs += [top, *top.children(recursive=True)]
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid_file = tmp / f"{side.name}-data" / "postgres" / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        procs += [postmaster, *postmaster.children(recursive=True)]
    return _cpu_of(procs)


@dataclass(frozen=True)
class Burst:
    """One throughput burst of one side: workflows per second, and CPU ms per workflow of the
    side as a whole (0 without a scratch directory), its server process, its worker, its
    broker and its PostgreSQL (0 without a scratch directory)."""

    rate: float
    cpu: float
    server: float
    worker: float
    broker: float = 0.0
    postgres: float = 0.0


async def _throughput(side: Side, n: int, tmp: Path | None = None) -> Burst:
    """``n`` workflows executed at once (as bench's throughput runs them), until the last result."""
    cpu = _side_cpu(side, tmp) if tmp else 0.0
    server, worker, broker = _server_cpu(side), _worker_cpu(side), _broker_cpu(side)
    postgres = _postgres_cpu(side, tmp) if tmp else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(side.client.execute_workflow(
        OneActivity.run, i, id=f"cmp-burst-{uuid.uuid4().hex}", task_queue="bench") for i in range(n)))
    rate = n / (time.perf_counter() - started)
    cpu_per_wf = (_side_cpu(side, tmp) - cpu) * 1000 / n if tmp else 0.0
    server_per_wf = (_server_cpu(side) - server) * 1000 / n
    worker_per_wf = (_worker_cpu(side) - worker) * 1000 / n
    broker_per_wf = (_broker_cpu(side) - broker) * 1000 / n
    postgres_per_wf = (_postgres_cpu(side, tmp) - postgres) * 1000 / n if tmp else 0.0
    if n > 2000:
        # One HTTP/1.1 connection per workflow in flight, kept open: with both sides' kept, a
        # burst of 10,000 runs out of file descriptors. The next burst opens them again.
        await side.client.close()
        side.client = await Client.connect(side.target)
    # Each burst as it ends (a sitting that ends early on a failed call still leaves its pairs).
    print(f"  burst {side.name}: {rate:.0f} wf/s; CPU ms/wf {cpu_per_wf:.3f} (server {server_per_wf:.3f},"
          f" worker {worker_per_wf:.3f}, broker {broker_per_wf:.3f}, PostgreSQL {postgres_per_wf:.3f})", flush=True)
    return Burst(rate, cpu_per_wf, server_per_wf, worker_per_wf, broker_per_wf, postgres_per_wf)


async def _timer_burst(side: Side, n: int) -> list[float]:
    handles = await asyncio.gather(*(side.client.start_workflow(
        OneTimer.run, 1.0, id=f"cmp-timer-{uuid.uuid4().hex}", task_queue="bench") for _ in range(n)))
    # A checkout's OneTimer returns [wall before, wall after, ...] since issue 20 (the lateness by
    # the wall clock), a float before (the lateness by workflow.now()).
    return [(r[1] - r[0] - 1.0) * 1000 if isinstance(r, list) else float(r)
            for r in await asyncio.gather(*(h.result() for h in handles))]


async def _same_second(side: Side, n: int, lead: float) -> dict[str, float]:
    """``n`` runs sleeping to one moment ``lead`` seconds after the first start (bench's
    same-second mode): the lateness figures of bench.same_second_lateness."""
    due = time.time() + lead
    handles = await asyncio.gather(*(side.client.start_workflow(
        SleepUntil.run, due, id=f"cmp-due-{uuid.uuid4().hex}", task_queue="bench") for _ in range(n)))
    figures = same_second_lateness(await asyncio.gather(*(h.result() for h in handles)), due)
    await side.client.close()  # its n connections: see _throughput
    side.client = await Client.connect(side.target)
    return figures


async def _alternating(rounds: int, a: Side, b: Side, measure: Callable[[Side], Awaitable[_T]]) -> list[dict[str, _T]]:
    """``measure`` each side ``rounds`` times, in pairs, the side that goes first alternating
    (A, B, B, A, ...): one result per side and round, by side name."""
    pairs = []
    for i in range(rounds):
        pairs.append({side.name: await measure(side) for side in ((a, b) if i % 2 == 0 else (b, a))})
    return pairs


def _report(what: str, a: Side, b: Side, samples: dict[str, list[float]], ratios: list[float]) -> None:
    for side in (a, b):
        s = samples[side.name]
        print(f"  {side.name} ({side.checkout}): p50 {_pct(s, 50):.1f}  p95 {_pct(s, 95):.1f}"
              f"  p99 {_pct(s, 99):.1f} ms")
    print(f"  {what}: median of the per-pair ratios B/A {statistics.median(ratios):.3f}"
          f" (min {min(ratios):.3f}, max {max(ratios):.3f})"
          + (f"; per pair {' '.join(f'{r:.2f}' for r in ratios)}" if len(ratios) <= 20 else ""))


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kadence-compare-"))
    sides: list[Side] = []
    try:
        for name, checkout in (("A", args.a), ("B", args.b)):
            sides.append(await _start(name, checkout.resolve(), tmp, args.sdk_defaults))
        a, b = sides
        for side in sides:  # warm-up, not measured
            for _ in range(args.warmup):
                await _latency(side)
        if args.latency_n:
            pairs = await _alternating(args.latency_n, a, b, _latency)
            print(f"Latency, {args.latency_n} sequential workflows each, alternating:")
            _report("latency", a, b, {s.name: [p[s.name] for p in pairs] for s in sides},
                    [p["B"] / p["A"] for p in pairs])
        if args.throughput_bursts:
            measured = await _alternating(args.throughput_bursts, a, b,
                                          lambda s: _throughput(s, args.throughput_n, tmp))
            rates = [{k: v.rate for k, v in p.items()} for p in measured]
            cpus = [{k: v.cpu for k, v in p.items()} for p in measured]
            servers = [{k: v.server for k, v in p.items()} for p in measured]
            workers = [{k: v.worker for k, v in p.items()} for p in measured]
            brokers = [{k: v.broker for k, v in p.items()} for p in measured]
            postgreses = [{k: v.postgres for k, v in p.items()} for p in measured]
            print(f"Throughput, {args.throughput_bursts} bursts of {args.throughput_n} workflows at once each:")
            for side in sides:
                r = [p[side.name] for p in rates]
                c = [p[side.name] for p in cpus]
                print(f"  {side.name} ({side.checkout}): median {statistics.median(r):.0f} wf/s"
                      f" (min {min(r):.0f}, max {max(r):.0f}); CPU (server, broker, worker, PostgreSQL)"
                      f" {statistics.median(c):.2f} ms/wf (min {min(c):.2f}, max {max(c):.2f});"
                      f" server process {statistics.median(p[side.name] for p in servers):.2f} ms/wf;"
                      f" worker {statistics.median(p[side.name] for p in workers):.2f} ms/wf")
            rate_ratios = [p["B"] / p["A"] for p in rates]
            print(f"  throughput: median of the per-pair ratios B/A {statistics.median(rate_ratios):.3f}"
                  f" (min {min(rate_ratios):.3f}, max {max(rate_ratios):.3f}); per pair"
                  f" {' '.join(f'{r:.2f}' for r in rate_ratios)}")
            for what, per in (("CPU per workflow", cpus), ("server process CPU per workflow", servers),
                              ("worker CPU per workflow", workers), ("broker CPU per workflow", brokers),
                              ("PostgreSQL CPU per workflow", postgreses)):
                ratios = [p["B"] / p["A"] for p in per if p["A"] > 0]
                if ratios:
                    print(f"  {what}: median of the per-pair ratios B/A {statistics.median(ratios):.3f}"
                          f" (min {min(ratios):.3f}, max {max(ratios):.3f}); per pair"
                          f" {' '.join(f'{r:.2f}' for r in ratios)}")
        if args.timer_bursts:
            bursts = await _alternating(args.timer_bursts, a, b, lambda s: _timer_burst(s, args.timer_n))
            print(f"Timer lateness, {args.timer_bursts} bursts of {args.timer_n} one-second timers each:")
            _report("p99 per burst", a, b, {s.name: [x for p in bursts for x in p[s.name]] for s in sides},
                    [_pct(p["B"], 99) / max(_pct(p["A"], 99), 1.0) for p in bursts])
            for what, of in (("p50", lambda v: _pct(v, 50)), ("min", min)):
                ratios = [of(p["B"]) / max(of(p["A"]), 0.1) for p in bursts]
                print(f"  {what} per burst: median of the per-pair ratios B/A {statistics.median(ratios):.3f}"
                      f" (min {min(ratios):.3f}, max {max(ratios):.3f}); per pair"
                      f" {' '.join(f'{r:.2f}' for r in ratios)}")
            early = {s.name: sum(1 for p in bursts for x in p[s.name] if x < 0) for s in sides}
            print(f"  woke early (wall clock): A {early['A']}, B {early['B']}")
        if args.same_second:
            rounds = await _alternating(args.same_second_bursts, a, b,
                                        lambda s: _same_second(s, args.same_second, args.lead))
            print(f"Same second, {args.same_second_bursts} bursts of {args.same_second} runs due at one moment"
                  f" {args.lead:g} s after the first start:")
            for side in sides:
                print(f"  {side.name} ({side.checkout}): " + "; ".join(
                    f"{k} " + " ".join(f"{p[side.name].get(k, float('nan')):,.0f}" for p in rounds)
                    for k in ("p50_ms", "p99_ms", "max_ms", "early", "replayed", "late_calls", "sleep_p99_ms",
                              "call_p99_ms")))
            for key in ("p50_ms", "p99_ms"):
                ratios = [p["B"][key] / max(p["A"][key], 1.0) for p in rounds]
                print(f"  {key}: median of the per-pair ratios B/A {statistics.median(ratios):.3f}"
                      f" (min {min(ratios):.3f}, max {max(ratios):.3f}); per pair"
                      f" {' '.join(f'{r:.2f}' for r in ratios)}")
    finally:
        for side in sides:
            await side.client.close()
            stop_processes(side.processes)
        shutil.rmtree(tmp, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, help="checkout B (the change)")
    parser.add_argument("--latency-n", type=int, default=400,
                        help="sequential workflows on each side (0: no latency phase)")
    parser.add_argument("--warmup", type=int, default=100, help="workflows on each side before measuring")
    parser.add_argument("--throughput-bursts", type=int, default=4,
                        help="bursts of workflows started at once on each side (0: none)")
    parser.add_argument("--throughput-n", type=int, default=1000, help="workflows per throughput burst")
    parser.add_argument("--sdk-defaults", action="store_true",
                        help="run each checkout's worker with its SDK's default settings (no tuning)")
    parser.add_argument("--timer-bursts", type=int, default=4, help="bursts of timers on each side (0: none)")
    parser.add_argument("--timer-n", type=int, default=100, help="timers per burst")
    parser.add_argument("--same-second", type=int, default=0, metavar="N",
                        help="bursts of N runs sleeping to one wall-clock moment (0: none)")
    parser.add_argument("--same-second-bursts", type=int, default=4, help="--same-second: bursts on each side")
    parser.add_argument("--lead", type=float, default=30.0,
                        help="--same-second: seconds from the first start to that moment (default 30)")
    _loop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
