"""The frontend's HTTP path alone, two checkouts side by side: server CPU per task answer.

    python -m benchmarks.http_path /path/to/checkout-a /path/to/checkout-b --rounds 6

End to end (``benchmarks.compare``) the HTTP path is one share of the server's CPU among
history, the broker and PostgreSQL, and the machine's drift hides a change of a few per
cent there. This runs each checkout's real frontend app (routing, body parsing and
checking, handlers, token verification, the engine's command checks and Avro encoding)
with a producer that takes every record at once (no broker, no history), and alternates
the same load between them: ``POST /task-answers`` batches of 100 answers (half activity
results with a workflow task run ahead, half workflow tasks scheduling an activity) and
single answers on their own paths. It prints each side's server CPU per answer (from
/proc, through psutil) and the median of the per-round ratios B/A.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = "/api/v1/namespaces/default"
KEY = "k" * 32
RUN_ID = "0193c9aa-1111-2222-3333-444455556666"


async def serve() -> None:
    """The frontend app of the checkout first on PYTHONPATH; prints its URL."""
    from aiohttp import web

    from services.frontend.app import build_app
    from services.frontend.engine import Engine
    from services.frontend.handlers import Handlers
    from services.frontend.tokens import TokenKeys

    class Producer:
        """Takes every record at once."""

        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1}

        async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                       timestamp_ms: int | None = None, headers: Any = None) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    engine = Engine(instance_id="bench", producer=Producer(), replies=None, closes=None,  # type: ignore[arg-type]
                    reads=None, matching=None, token_keys=TokenKeys.of([KEY]))  # type: ignore[arg-type]
    runner = web.AppRunner(build_app(Handlers(engine, None)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def answers(count: int) -> list[dict[str, Any]]:
    from services.frontend.tokens import TaskToken, TokenKeys

    keys = TokenKeys.of([KEY])
    out: list[dict[str, Any]] = []
    ids = random.Random(count)  # the SDK's run-ahead ids are random 63-bit integers, 19 digits most often
    for i in range(count):
        if i % 2:
            token = TaskToken("default", f"wf-{i}", RUN_ID, 5, 1, "activity", 1, "bench").encode(keys)
            out.append({"operation": "complete_activity_task", "body": {
                "task_token": token, "result": "[1]", "identity": "1@host", "workflow_task": {
                    "after_scheduled_event_id": 5, "after_started_time": 1, "started_time": 2,
                    "ahead_id": ids.getrandbits(63),
                    "after_ahead_id": 0,
                    "commands": [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": "[1]"}}]}}})
        else:
            token = TaskToken("default", f"wf-{i}", RUN_ID, 2, 1, "workflow", 1, "bench").encode(keys)
            out.append({"operation": "complete_workflow_task", "body": {
                "task_token": token, "identity": "1@host", "commands": [{
                    "command_type": "ScheduleActivityTask", "attributes": {
                        "activity_id": "1", "activity_type": "echo", "task_queue": "bench", "input": "[1]",
                        "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0,
                        "start_to_close_timeout_ms": 10000, "heartbeat_timeout_ms": 0}}]}})
    return out


_PATHS = {"complete_activity_task": "/activity-tasks/complete", "complete_workflow_task": "/workflow-tasks/complete"}


async def load(session: Any, url: str, server: Any, batches: int, singles: int) -> float:
    """Send ``batches`` batches of 100 answers and ``singles`` lone answers; the server's CPU
    microseconds per answer."""
    import orjson

    json = {"Content-Type": "application/json"}
    before = sum(server.cpu_times()[:2])
    batch = orjson.dumps({"answers": answers(100)})

    async def one_batch() -> None:
        async with session.post(url + ROOT + "/task-answers", data=batch, headers=json) as r:
            body = await r.json()
            assert r.status == 200 and all(x["status"] == 200 for x in body["results"]), body

    for _ in range(batches // 10):
        await asyncio.gather(*(one_batch() for _ in range(10)))
    alone = [(_PATHS[a["operation"]], orjson.dumps(a["body"])) for a in answers(20)]

    async def one(path: str, data: bytes) -> None:
        async with session.post(url + ROOT + path, data=data, headers=json) as r:
            assert r.status == 200, await r.text()
            await r.read()

    for _ in range(singles // 20):
        await asyncio.gather(*(one(p, d) for p, d in alone))
    return float((sum(server.cpu_times()[:2]) - before) * 1e6 / (batches * 100 + singles))


async def compare(a: Path, b: Path, rounds: int) -> None:
    import aiohttp
    import psutil

    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        for name, checkout in (("A", a), ("B", b)):
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            # This file serves either side (a checkout without it too): the frontend it
            # imports is the checkout's, first on PYTHONPATH.
            proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=checkout, env=env,
                                    stdout=subprocess.PIPE)
            procs[name] = proc
            assert proc.stdout is not None
            urls[name] = proc.stdout.readline().decode().strip()
        servers = {k: psutil.Process(p.pid) for k, p in procs.items()}
        async with aiohttp.ClientSession() as session:
            for k in "AB":
                await load(session, urls[k], servers[k], 20, 100)  # warm-up, not measured
            taken: dict[str, list[float]] = {"A": [], "B": []}
            ratios = []
            for i in range(rounds):
                got = {}
                for k in "AB" if i % 2 == 0 else "BA":
                    got[k] = await load(session, urls[k], servers[k], 100, 1000)
                    taken[k].append(got[k])
                ratios.append(got["B"] / got["A"])
                print(f"round {i + 1}: A {got['A']:.1f}, B {got['B']:.1f} us of server CPU per answer;"
                      f" B/A {ratios[-1]:.3f}", flush=True)
        for k, checkout in (("A", a), ("B", b)):
            print(f"{k} ({checkout}): median {statistics.median(taken[k]):.1f} us per answer"
                  f" (min {min(taken[k]):.1f}, max {max(taken[k]):.1f})")
        print(f"server CPU per answer, median of the per-round ratios B/A: {statistics.median(ratios):.3f}"
              f" (min {min(ratios):.3f}, max {max(ratios):.3f})")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", nargs="?", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", nargs="?", type=Path, help="checkout B (the change)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
    elif args.a is None or args.b is None:
        parser.error("give two checkouts")
    else:
        asyncio.run(compare(args.a.resolve(), args.b.resolve(), args.rounds))


if __name__ == "__main__":
    main()
