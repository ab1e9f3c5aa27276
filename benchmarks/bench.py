"""Kadence benchmark: throughput, latency, timer lateness and replay speed.

    python -m benchmarks.bench                 # starts `kadence dev` itself, 3 runs
    python -m benchmarks.bench --n 10000       # the larger throughput run
    python -m benchmarks.bench --target http://127.0.0.1:7233 --dsn postgresql://...  # running services

Prints a table of medians (min-max) over the runs and writes every measurement as JSON
lines (``--out``). CPU is read from /proc through psutil for the whole machine and for each
process: the Kadence server, the broker, PostgreSQL (postmaster and backends), the worker
and this client. PostgreSQL runs with its durable defaults (fsync and synchronous_commit on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from kadence import Client
from kadence.replay import Replayer
from kadence_protocol import avro
from services.cli import DEV_SHARDS
from services.common import loop as _loop
from services.common.aio import start_or_undo
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from services.history.state import rebuild

from .replay_history import LoopActivities, loop_history
from .workflows import OneActivity, OneTimer, SleepUntil

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Roles:
    """The processes whose CPU is measured, by role."""

    procs: dict[str, list[psutil.Process]] = field(default_factory=dict)
    pg_postmaster: psutil.Process | None = None

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, procs in self.procs.items():
            out[role] = sum(_cpu(p) for p in procs)
        if self.pg_postmaster is not None:
            family = [self.pg_postmaster, *self.pg_postmaster.children(recursive=True)]
            out["postgres"] = sum(_cpu(p) for p in family)
        t = psutil.cpu_times()
        out["machine"] = t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "nice", 0)
        return out

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of every role's processes (PostgreSQL: postmaster and backends), MB."""
        out = {role: sum(_rss(p) for p in procs) / 2**20 for role, procs in self.procs.items()}
        if self.pg_postmaster is not None:
            family = [self.pg_postmaster, *self.pg_postmaster.children(recursive=True)]
            out["postgres"] = sum(_rss(p) for p in family) / 2**20
            # The backends' RSS counts the shared buffers each touched; PSS shares them out.
            out["postgres_pss"] = sum(_pss(p) for p in family) / 2**20
        return out


def _rss(p: psutil.Process) -> int:
    try:
        return int(p.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def _pss(p: psutil.Process) -> int:
    try:
        return int(getattr(p.memory_full_info(), "pss", 0))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def wall_lateness(samples: list[list[float]], seconds: float) -> dict[str, Any]:
    """Timer lateness by the wall clock read inside the workflow: ``after - before - seconds``
    in ms per sample ``[before, after, ...]``. A sample whose span is under half the sleep was
    read during a replay (``before`` read after the wake-up): left out and counted."""
    late = [(s[1] - s[0] - seconds) * 1000 for s in samples if s[1] - s[0] >= seconds / 2]
    return {"p50_ms": _pct(late, 50), "p99_ms": _pct(late, 99), "min_ms": min(late), "max_ms": max(late),
            "early": sum(1 for x in late if x < 0), "replayed": len(samples) - len(late)}


def same_second_lateness(samples: list[list[float]], due: float) -> dict[str, Any]:
    """Wake-up lateness of ``SleepUntil`` runs sleeping to ``due``: by the wall clock read
    inside the workflow after the sleep, past ``due`` (ms). A sample ``[before, after, now,
    replaying]`` whose first read came in a replay (the task run ahead on the timer was not
    taken, and the run replayed on the task history handed out) is counted in ``replayed``
    (its ``after`` is when the replay read it). ``late_calls``: the other runs whose code
    called sleep only after ``due`` (their first task, not their timer, was late: the lead
    must be raised). ``sleep_p99_ms``: the sleeps' own lateness, past the later of ``due``
    and the call. ``call_p99_ms``: how long after its task's ``workflow.now()`` the code
    called sleep (the first tasks' wait under the burst of starts; not on the lateness).
    A sample of three (an older ``SleepUntil``, its delay counted from ``workflow.now()``)
    is told a replay by a span under half the sleep asked for."""
    late = [(s[1] - due) * 1000 for s in samples]
    replayed = [bool(s[3]) if len(s) > 3 else len(s) > 2 and s[1] - s[0] < max(0.0, due - s[2]) / 2
                for s in samples]
    own = [(s[1] - (max(due, s[0]) if len(s) > 3 else s[0] + max(0.0, due - s[2]))) * 1000
           for s, r in zip(samples, replayed, strict=True) if len(s) > 2 and not r]
    calls = [(s[0] - s[2]) * 1000 for s, r in zip(samples, replayed, strict=True) if len(s) > 2 and not r]
    return {"p50_ms": _pct(late, 50), "p99_ms": _pct(late, 99), "min_ms": min(late), "max_ms": max(late),
            "early": sum(1 for x in late if x < 0), "replayed": sum(replayed),
            "late_calls": sum(1 for s, r in zip(samples, replayed, strict=True) if s[0] >= due and not r),
            **({"sleep_p99_ms": _pct(own, 99), "call_p99_ms": _pct(calls, 99)} if own else {})}


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return float(t.user + t.system)
    except psutil.NoSuchProcess:
        return 0.0


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


# The benchmark worker's concurrency (--worker-workflow-tasks, --worker-tasks-per-poll).
WORKER_WORKFLOW_TASKS = 200
WORKER_TASKS_PER_POLL = 50


async def spawn(module: str, args: list[str], log: Path, ready: str, *, cwd: Path = ROOT,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m module args`` with its output in ``log``; return the process and the
    log's text once ``ready`` is in it (the process is stopped if it never gets there)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    try:
        return proc, await _wait_line(log, ready, proc)
    except BaseException:
        stop_processes([proc])
        raise


async def spawn_dev(tmp: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``kadence dev`` on free ports with its data and log under ``tmp``; return the
    process and its frontend URL once it is running."""
    port, kafka_port = free_port(), free_port()
    server, _ = await spawn("kadence.cli", ["dev", "--data-dir", str(tmp / "data"), "--port", str(port),
                                            "--kafka-port", str(kafka_port)], tmp / "server.log",
                            "Kadence is running", env=env)
    return server, f"http://127.0.0.1:{port}"


async def _wait_line(log: Path, text: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{content[-3000:]}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {text!r} in {log}")


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes we started, by PID, the last started first (SIGKILL after 30 s)."""
    for p in reversed(processes):
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.roles = Roles()
        self.children: list[subprocess.Popen[bytes]] = []
        self.results: list[dict[str, Any]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="kadence-bench-"))
        self.broker: EmbeddedBroker | None = None  # with --topology services
        self.pg: EmbeddedPostgres | None = None

    async def start(self) -> None:
        """Start what the run measures; if any of it fails, stop what did start (the services
        of --topology services, the broker, PostgreSQL) before raising."""
        await start_or_undo(self._start, self.stop)

    async def _start(self) -> None:
        a = self.args
        if a.target:
            self.target, self.dsn = a.target, a.dsn
        elif a.topology == "services":
            await self._start_services()
        else:
            port, kafka_port = free_port(), free_port()
            server, text = await spawn("kadence.cli", [
                "dev", "--data-dir", str(self.tmp / "data"), "--port", str(port), "--kafka-port", str(kafka_port),
                "--shards", str(a.shards)], self.tmp / "server.log", "Kadence is running")
            self.children.append(server)
            self.target = f"http://127.0.0.1:{port}"
            self.dsn = next(line.split("PostgreSQL:", 1)[1].strip() for line in text.splitlines()
                            if "PostgreSQL:" in line)
            sp = psutil.Process(server.pid)
            self.roles.procs["server"] = [sp]
            self.roles.procs["broker"] = [c for c in sp.children() if "tansu" in c.name()]
            pid_file = self.tmp / "data" / "postgres" / "postmaster.pid"
            self.roles.pg_postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        tuning = ["--sdk-defaults"] if a.sdk_defaults else [
            "--workflow-tasks", str(a.worker_workflow_tasks), "--tasks-per-poll", str(a.worker_tasks_per_poll)]
        worker, _ = await spawn("benchmarks.worker", ["--target", self.target, *tuning], self.tmp / "worker.log",
                                "worker ready")
        self.children.append(worker)
        self.roles.procs["worker"] = [psutil.Process(worker.pid)]
        self.roles.procs["client"] = [psutil.Process(os.getpid())]
        self.client = await Client.connect(self.target)
        if self.dsn:
            conn = await asyncpg.connect(self.dsn)
            try:
                self.durability = {k: await conn.fetchval(f"SHOW {k}")
                                   for k in ("fsync", "synchronous_commit", "wal_init_zero")}
            finally:
                await conn.close()
            print("PostgreSQL: " + " ".join(f"{k}={v}" for k, v in self.durability.items()), flush=True)

    async def _start_services(self) -> None:
        """The broker and PostgreSQL here, then history, matching and frontend as processes of
        their own, as a deployment runs them: every hop between them goes through the broker."""
        self.broker = await EmbeddedBroker.start(free_port(), log_path=self.tmp / "broker.log")
        self.pg = EmbeddedPostgres.start(self.tmp / "postgres")
        port = free_port()
        env = {**os.environ, "KADENCE_KAFKA_BOOTSTRAP": self.broker.bootstrap, "KADENCE_DATABASE_URL": self.pg.dsn,
               "KADENCE_SHARDS": str(self.args.shards), "KADENCE_TASK_PARTITIONS": str(self.args.shards),
               "KADENCE_FRONTEND_PORT": str(port), "KADENCE_SESSION_TIMEOUT_MS": "3000",
               # A frontend of its own refuses to start without task-token keys (frontend/tokens.py).
               "KADENCE_TASK_TOKEN_KEYS": os.environ.get("KADENCE_TASK_TOKEN_KEYS") or secrets.token_urlsafe(32)}
        for name in ("history", "matching", "frontend"):  # the first one migrates and creates the topics
            proc, _ = await spawn(f"services.{name}", [], self.tmp / f"{name}.log", f"{name} is running", env=env)
            self.children.append(proc)
            self.roles.procs[name] = [psutil.Process(proc.pid)]
        self.target, self.dsn = f"http://127.0.0.1:{port}", self.pg.dsn
        self.roles.procs["broker"] = [psutil.Process(self.broker.process.pid)]
        pid_file = self.tmp / "postgres" / "postmaster.pid"
        self.roles.pg_postmaster = psutil.Process(int(pid_file.read_text().split()[0]))

    async def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            await self.client.close()
        stop_processes(self.children)
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def record(self, **row: Any) -> None:
        row["topology"] = "target" if self.args.target else self.args.topology
        row["worker"] = "sdk-defaults" if self.args.sdk_defaults else "tuned"
        self.results.append(row)
        if self.args.out:
            with open(self.args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    async def burst(self, n: int, prefix: str) -> tuple[float, dict[str, float]]:
        """N workflows at once; the seconds they took and the CPU seconds of each role."""
        # Every workflow is one execute_workflow call (start and wait in one exchange); at most
        # --clients of them are open at once, or all N with --clients 0 (asyncio.gather of N).
        gate = asyncio.Semaphore(min(n, self.args.clients) if self.args.clients > 0 else n)

        async def execute(i: int) -> Any:
            async with gate:
                return await self.client.execute_workflow(OneActivity.run, i, id=f"{prefix}-{i}", task_queue="bench")

        before = self.roles.cpu()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(execute(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
        cpu = _delta(self.roles.cpu(), before)
        assert results == list(range(n)), "a workflow returned the wrong result"
        return elapsed, cpu

    async def throughput(self, n: int, run: int) -> None:
        if not n:  # --n 0: no throughput phase (a latency-only run)
            return
        elapsed, cpu = await self.burst(n, f"tp{n}-{run}-{uuid.uuid4().hex[:6]}")
        self.record(bench="throughput", n=n, run=run, clients=self.args.clients or n, seconds=elapsed,
                    wf_per_s=n / elapsed, cpu_ms_per_wf={k: v * 1000 / n for k, v in cpu.items()})

    async def latency(self, n: int, run: int) -> None:
        if not n:  # --latency-n 0: no phase, and no row of empty figures
            return
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            assert await self.client.execute_workflow(OneActivity.run, i, id=f"lat-{run}-{uuid.uuid4().hex}",
                                                      task_queue="bench") == i
            samples.append((time.perf_counter() - t0) * 1000)
        self.record(bench="latency", n=n, run=run, p50_ms=_pct(samples, 50), p95_ms=_pct(samples, 95),
                    p99_ms=_pct(samples, 99))

    async def timers(self, n: int, run: int) -> None:
        if not n:
            return
        handles = await asyncio.gather(*(
            self.client.start_workflow(OneTimer.run, 1.0, id=f"timer-{run}-{uuid.uuid4().hex}", task_queue="bench")
            for _ in range(n)))
        samples = await asyncio.gather(*(h.result() for h in handles))
        self.record(bench="timers", n=n, run=run, **wall_lateness(samples, 1.0),
                    now_p99_ms=_pct([s[2] for s in samples], 99))

    async def same_second(self, n: int, lead: float, run: int) -> None:
        """``n`` runs each sleeping to one wall-clock moment ``lead`` seconds after the first
        start: lateness is the wall clock after the wake-up minus that moment."""
        due = time.time() + lead
        handles = await asyncio.gather(*(
            self.client.start_workflow(SleepUntil.run, due, id=f"due-{run}-{uuid.uuid4().hex}", task_queue="bench")
            for _ in range(n)))
        started = time.time()
        samples = await asyncio.gather(*(h.result() for h in handles))
        self.record(bench="same_second", n=n, run=run, lead_s=lead, starts_s=started - (due - lead),
                    **same_second_lateness(samples, due))

    async def fold_replay(self, run: int) -> None:
        """Events per second through the history fold, over every run in the database."""
        if not self.dsn:
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT e.run_id, x.namespace, x.workflow_id, e.data FROM history_events e"
                                    " JOIN executions x USING (run_id) ORDER BY e.run_id, e.event_id LIMIT 200000")
        finally:
            await conn.close()
        runs: dict[str, tuple[str, str, list[bytes]]] = {}
        for r in rows:
            runs.setdefault(r["run_id"], (r["namespace"], r["workflow_id"], []))[2].append(r["data"])
        t0 = time.perf_counter()
        for run_id, (ns, wid, data) in runs.items():
            rebuild(ns, wid, run_id, (avro.decode(d)[1] for d in data))
        elapsed = time.perf_counter() - t0
        self.record(bench="fold_replay", run=run, events=len(rows), events_per_s=len(rows) / elapsed)

    def sdk_replay(self, run: int) -> None:
        events = loop_history(10_000)
        t0 = time.perf_counter()
        Replayer(workflows=[LoopActivities]).replay(events, workflow_id="replay", run_id="r")
        elapsed = time.perf_counter() - t0
        self.record(bench="sdk_replay", run=run, events=len(events), events_per_s=len(events) / elapsed)


def _summary(results: list[dict[str, Any]]) -> list[str]:
    def med(rows: list[dict[str, Any]], key: str, sub: str | None = None) -> str:
        vals = [r[key][sub] if sub else r[key] for r in rows]
        return f"{statistics.median(vals):,.1f} ({min(vals):,.1f}-{max(vals):,.1f})"

    lines = []
    for n in sorted({r["n"] for r in results if r["bench"] == "throughput"}):
        rows = [r for r in results if r["bench"] == "throughput" and r["n"] == n]
        lines.append(f"throughput N={n}: {med(rows, 'wf_per_s')} wf/s; "
                     f"CPU ms/wf machine {med(rows, 'cpu_ms_per_wf', 'machine')}")
        for role in [k for k in rows[0]["cpu_ms_per_wf"] if k != "machine"]:
            lines.append(f"    {role:>8}: {med(rows, 'cpu_ms_per_wf', role)} ms/wf")
    for bench, keys in (("latency", ("p50_ms", "p95_ms", "p99_ms")),
                        ("timers", ("p50_ms", "p99_ms", "min_ms", "now_p99_ms")),
                        ("same_second", ("p50_ms", "p99_ms", "max_ms", "starts_s", "replayed")),
                        ("fold_replay", ("events_per_s",)), ("sdk_replay", ("events_per_s",))):
        rows = [r for r in results if r["bench"] == bench]
        if rows:
            lines.append(f"{bench}: " + "; ".join(f"{k} {med(rows, k)}" for k in keys))
    return lines


async def main(args: argparse.Namespace) -> None:
    if args.sustained:
        from .sustained import sustained  # matplotlib: the `bench` extra

        await sustained(Bench(args), args)
        return
    results: list[dict[str, Any]] = []
    for run in range(args.runs):
        # Each run gets a fresh `kadence dev` (unless --target): the development broker keeps
        # every record in memory and slows down as its topics grow, which would make later
        # runs measure the broker's history rather than Kadence.
        bench = Bench(args)
        await bench.start()
        try:
            # Warm-up, not measured: caches and consumer groups settled, and as many client
            # connections open as the throughput phase keeps busy (an HTTP/1.1 client needs
            # one per request in flight; opening them is not what the phase measures).
            await asyncio.gather(*(bench.client.execute_workflow(
                OneActivity.run, i, id=f"warm-{uuid.uuid4().hex}", task_queue="bench")
                for i in range(max(args.warmup, min(args.clients or max(args.n), max(args.n))))))
            for n in args.n:
                await bench.throughput(n, run)
            await bench.latency(args.latency_n, run)
            await bench.timers(args.timer_n, run)
            if args.same_second:
                await bench.same_second(args.same_second, args.lead, run)
            await bench.fold_replay(run)
            bench.sdk_replay(run)
            print(f"run {run + 1}/{args.runs} done", flush=True)
        finally:
            await bench.stop()
        results.extend(bench.results)
    print("\n".join(["", f"Kadence benchmark, medians over {args.runs} runs (min-max):", *_summary(results)]))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="frontend URL of running services (default: start kadence dev)")
    parser.add_argument("--dsn", help="PostgreSQL DSN of running services (for the replay benchmark)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every phase (default 3; medians over them)")
    parser.add_argument("--n", type=int, nargs="+", default=[1000], help="throughput sizes (e.g. 1000 10000)")
    parser.add_argument("--latency-n", type=int, default=100, help="sequential workflows (0: no latency phase)")
    parser.add_argument("--timer-n", type=int, default=100, help="one-second timers at once (0: no timer phase)")
    parser.add_argument("--same-second", type=int, default=0, metavar="N",
                        help="N runs sleeping to the same wall-clock moment (0: none)")
    parser.add_argument("--lead", type=float, default=30.0,
                        help="--same-second: seconds from the first start to that moment (default 30)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="unmeasured workflows first, at least (default 200; raised to the throughput phase's"
                             " workflows in flight)")
    parser.add_argument("--clients", type=int, default=1000,
                        help="throughput: workflows started and awaited at once (one HTTP exchange each;"
                             " default 1000); 0: all N at once, no client cap")
    parser.add_argument("--sdk-defaults", action="store_true",
                        help="the worker with the SDK's default settings (no tuning), on asyncio.run")
    parser.add_argument("--sustained", type=int, default=0, metavar="N",
                        help="sustained mode: N workflows through one long-lived `kadence dev` in bursts")
    parser.add_argument("--burst", type=int, default=10_000, help="sustained mode: workflows per burst, all at once")
    parser.add_argument("--window", type=int, default=0,
                        help="sustained mode: workflows per compared window (default N/10, at least one burst)")
    parser.add_argument("--idle-probe", type=float, default=0.0, metavar="S",
                        help="sustained mode: after each burst, each process's CPU over S idle seconds")
    parser.add_argument("--plot", default="sustained.png", help="sustained mode: the PNG of throughput and RSS")
    parser.add_argument("--shards", type=int, default=DEV_SHARDS,
                        help=f"history shards (default {DEV_SHARDS}, as `kadence dev`)")
    parser.add_argument("--topology", choices=["dev", "services"], default="dev",
                        help="dev: one `kadence dev` process (the default); services: history, matching and "
                             "frontend as processes of their own, each measured apart")
    parser.add_argument("--worker-workflow-tasks", type=int, default=WORKER_WORKFLOW_TASKS,
                        help="workflow tasks the worker runs at once (default 200; an untuned"
                             " SDK worker adapts from 50 up to 1,000)")
    parser.add_argument("--worker-tasks-per-poll", type=int, default=WORKER_TASKS_PER_POLL,
                        help="tasks one worker poll may bring (default 50; an untuned SDK worker"
                             " adapts from 10 up to 100)")
    parser.add_argument("--out", help="append every measurement as a JSON line to this file")
    _loop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
