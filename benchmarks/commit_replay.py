"""What a history batch's commit costs PostgreSQL: recorded batches replayed, two statements alternated.

    python -m benchmarks.commit_replay capture seq.pkl            # 200 sequential workflows' commits
    python -m benchmarks.commit_replay capture burst.pkl --burst  # a burst of 1,000 at once
    python -m benchmarks.commit_replay replay seq.pkl --reps 3    # before (A) and now (B), A B B A per rep

``capture`` runs ``kadence dev`` (this checkout) with every commit statement's arguments
recorded (a warm-up of 200 workflows, then the measured part), and a benchmark worker.
``replay`` starts a scratch PostgreSQL (the embedded one, fsync and synchronous_commit on
unless ``--no-fsync``), applies every migration, and writes the recorded batches, in order,
once per variant and repetition into emptied tables: A is the statement of the build before
migration 0017 (``kadence_commit`` of 0016, given the audit records' names and headers, one
element per event), B is this build's (``kadence_commit_v2``, which takes the names from the
batch's events). Per variant: the median wall time of the
statement, the backend's CPU per commit (``/proc/<pid>/schedstat``) and WAL bytes per commit;
then the per-pair ratios B/A. Only the measured part's batches count; the relay's deletes of
published outbox rows run between batches, outside the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from services.common.db import migrate
from services.common.embedded import EmbeddedPostgres, free_port
from services.history import store

ROOT = Path(__file__).resolve().parents[1]

# The statement of the build before 0017 (services/history/store.py then): kadence_commit of
# 0016, which 0017 keeps, given the audit records' names and headers one element per event.
_BEFORE = "SELECT kadence_commit(" + ", ".join(f"${i}" for i in range(1, 30)) + ")"


def _before_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """This build's commit arguments as the build before sent them: the audit records named
    by (run id, event id) of every event, with their headers (a NULL each when untraced)."""
    events = args[5]
    headers = args[26] if args[26] is not None else [None] * len(events)
    return (*args[:26], [e[0] for e in events], [e[1] for e in events], headers)


def _load(path: Path) -> list[tuple[bool, tuple[Any, ...]]]:
    out = []
    with open(path, "rb") as f:
        while True:
            try:
                out.append(pickle.load(f))
            except EOFError:
                return out


async def _capture(path: Path, burst: bool) -> None:
    from kadence import Client

    from .bench import spawn, stop_processes
    from .workflows import OneActivity

    tmp = Path(tempfile.mkdtemp(prefix="kadence-commit-capture-"))
    port, kafka_port = free_port(), free_port()
    marker = tmp / "measuring"
    env = {**os.environ, "KADENCE_COMMIT_CAPTURE": str(path), "KADENCE_COMMIT_CAPTURE_MARK": str(marker)}
    processes = []
    try:
        server, _ = await spawn("benchmarks.commit_replay", ["_dev", "dev", "--data-dir", str(tmp / "data"),
                                "--port", str(port), "--kafka-port", str(kafka_port)], tmp / "server.log",
                                "Kadence is running", env=env)
        processes.append(server)
        target = f"http://127.0.0.1:{port}"
        worker, _ = await spawn("benchmarks.worker", ["--target", target, "--sdk-defaults"], tmp / "worker.log",
                                "worker ready")
        processes.append(worker)
        client = await Client.connect(target)

        async def run(i: int) -> None:
            result = await client.execute_workflow(OneActivity.run, i, id=f"c-{uuid.uuid4().hex}", task_queue="bench")
            assert result == i

        await asyncio.gather(*(run(i) for i in range(200)))
        marker.touch()
        if burst:
            await asyncio.gather(*(run(i) for i in range(1000)))
        else:
            for i in range(200):
                await run(i)
        await client.close()
    finally:
        stop_processes(processes)


def _dev(argv: list[str]) -> None:
    """``kadence dev`` with each commit's arguments appended to $KADENCE_COMMIT_CAPTURE."""
    out = open(os.environ["KADENCE_COMMIT_CAPTURE"], "wb")  # open for the process's life
    mark = Path(os.environ["KADENCE_COMMIT_CAPTURE_MARK"])
    fetchval = asyncpg.pool.Pool.fetchval

    async def recorded(self: asyncpg.Pool, query: str, *args: Any, **kw: Any) -> Any:
        if query == store._COMMIT:
            pickle.dump((mark.exists(), args), out)
            out.flush()
        return await fetchval(self, query, *args, **kw)

    asyncpg.pool.Pool.fetchval = recorded
    from kadence.cli import main

    sys.exit(main(argv))


def _cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


async def _replay_once(conn: asyncpg.Connection, pid: int, batches: list[tuple[bool, tuple[Any, ...]]],
                       query: str, before: bool) -> tuple[float, float, float]:
    await conn.execute("TRUNCATE executions, current_executions, history_events, request_ids, run_start_offsets,"
                       " timers, outbox_batches")
    times: list[float] = []
    cpu0, lsn0 = 0.0, None
    for measured, args in batches:
        if measured and lsn0 is None:
            cpu0, lsn0 = _cpu_ms(pid), await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        sent = _before_args(args) if before else args
        t0 = time.perf_counter()
        outcome = await conn.fetchval(query, *sent)
        elapsed = time.perf_counter() - t0
        assert outcome == 0, outcome
        if args[6] is not None:
            await conn.execute("DELETE FROM outbox_batches WHERE shard_id = $1 AND id <= $2", args[0], args[6])
        if measured:
            times.append(elapsed * 1000)
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn0)
    return statistics.median(times), (_cpu_ms(pid) - cpu0) / len(times), float(wal) / len(times)


async def _replay(path: Path, reps: int, fsync: bool) -> None:
    batches = _load(path)
    with tempfile.TemporaryDirectory(prefix="kadence-commit-replay-") as tmp:
        pg = EmbeddedPostgres.start(Path(tmp) / "pg")
        try:
            await migrate(pg.dsn)
            conn = await asyncpg.connect(pg.dsn)
            if not fsync:
                for setting in ("fsync", "synchronous_commit"):
                    await conn.execute(f"ALTER SYSTEM SET {setting} = off")
                await conn.execute("SELECT pg_reload_conf()")
            for shard_id, range_id in {a[0]: a[1] for _, a in batches}.items():
                await conn.execute("INSERT INTO shards (shard_id, range_id, owner) VALUES ($1, $2, 'replay')",
                                   shard_id, range_id)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
            for _ in range(reps):
                for side in ("A", "B", "B", "A"):
                    results[side].append(await _replay_once(conn, pid, batches, _BEFORE if side == "A"
                                                            else store._COMMIT, side == "A"))
            await conn.close()
        finally:
            pg.stop()
    n = sum(1 for measured, _ in batches if measured)
    print(f"{n} commits replayed per variant, fsync {'on' if fsync else 'off'}")
    for side, label in (("A", "before 0017"), ("B", "this build")):
        rows = results[side]
        print(f"  {side} ({label}): wall median ms " + " ".join(f"{r[0]:.3f}" for r in rows)
              + " | CPU ms/commit " + " ".join(f"{r[1]:.3f}" for r in rows)
              + " | WAL B/commit " + " ".join(f"{r[2]:.0f}" for r in rows))
    a, b = results["A"], results["B"]
    for i, what in enumerate(("wall", "CPU", "WAL")):
        print(f"  per-pair B/A {what}: " + " ".join(f"{b[k][i] / a[k][i]:.2f}" for k in range(len(a))))


def cli() -> None:
    if sys.argv[1:2] == ["_dev"]:
        _dev(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    capture = sub.add_parser("capture")
    capture.add_argument("out", type=Path)
    capture.add_argument("--burst", action="store_true", help="1,000 workflows at once instead of 200 one by one")
    replay = sub.add_parser("replay")
    replay.add_argument("capture", type=Path)
    replay.add_argument("--reps", type=int, default=3, help="repetitions of A B B A")
    replay.add_argument("--no-fsync", action="store_true", help="CPU alone (a diagnosis, not how Kadence runs)")
    args = parser.parse_args()
    if args.command == "capture":
        asyncio.run(_capture(args.out, args.burst))
    else:
        asyncio.run(_replay(args.capture, args.reps, not args.no_fsync))


if __name__ == "__main__":
    cli()
