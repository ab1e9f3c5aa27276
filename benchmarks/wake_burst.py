"""The worker's side of N timers due in the same second, without a server.

    python -m benchmarks.wake_burst --n 10000 --lead 15
    python -m benchmarks.wake_burst --checkout ../kadence-main --n 10000   # another checkout's SDK

N cached ``SleepUntil`` runs in one ``WorkflowTaskProcessor`` (the SDK's defaults: timer
run-ahead on, the SDK's tracing interceptor, answers through the ``AnswerBatcher``), each
having slept until one wall-clock moment; the transport answers every call after a short
wait, as a frontend on the same machine would. Prints the lateness of each run's code past
that moment, read by the wall clock inside the workflow right after its sleep (as bench's
``--same-second``), and the worker's CPU time from the moment to the last resume. On a
machine shared with other load, compare checkouts alternated (A B B A) and read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

RESUMED: list[tuple[float, float]] = []  # per run: the wall clock and this process's CPU time at its resume
ALL_RESUMED = asyncio.Event()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from kadence import workflow
    from kadence._tracing_interceptor import TracingInterceptor
    from kadence._worker.answers import AnswerBatcher
    from kadence._worker.workflow_tasks import WorkflowTaskProcessor
    from kadence._workflow.definition import WorkflowDefinition
    from tests.unit._fake_history import FakeHistory

    @workflow.defn(name="SleepUntil")
    class SleepUntil:
        @workflow.run
        async def run(self, due: float) -> list[float]:
            before = time.time()
            await workflow.sleep(max(0.0, due - workflow.now().timestamp()))
            after = time.time()
            RESUMED.append((after, time.process_time()))
            if len(RESUMED) == args.n:
                ALL_RESUMED.set()
            return [before, after]

    class Transport:
        """Answers each call after a short wait (a batch of answers a little longer)."""

        async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                       params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
            if path == "/workflow-tasks/complete":
                return {}  # the first tasks: not measured
            await asyncio.sleep(0.02 if path == "/task-answers" else 0.003)
            if path == "/task-answers" and body is not None:
                return {"results": [{"status": 200, "answer": {}} for _ in body["answers"]]}
            return {}

        async def close(self) -> None:
            pass

    processor = WorkflowTaskProcessor(AnswerBatcher(Transport()), namespace="default",
                                      workflows=[WorkflowDefinition.of(SleepUntil)], identity="wake-burst",
                                      interceptors=[TracingInterceptor()], run_timers_ahead=True,
                                      max_cached_workflows=max(10_000, args.n))
    due = time.time() + args.lead
    for i in range(args.n):
        history = FakeHistory("SleepUntil", due, run_id=f"run-{i}")
        events = history.task_events()
        await processor.process({"task_token": f"token-{i}", "workflow_id": f"wf-{i}", "run_id": history.run_id,
                                 "workflow_type": "SleepUntil", "scheduled_event_id": events[-1]["event_id"],
                                 "attempt": 1, "events": events, "started_time": int(time.time() * 1000)})
    if time.time() > due - 1:
        raise SystemExit(f"the first tasks took longer than the lead ({args.lead} s): raise --lead")
    await asyncio.sleep(max(0.0, due - time.time() - 0.5))
    cpu_before = time.process_time()
    await asyncio.wait_for(ALL_RESUMED.wait(), timeout=due + 120 - time.time())
    late = sorted((wall - due) * 1000 for wall, _ in RESUMED)
    cpu = sorted((spent - cpu_before) * 1000 for _, spent in RESUMED)
    processor.close()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]

    return {"bench": "wake_burst", "n": args.n, "resumed": len(late), "p50_ms": pct(late, 50),
            "p99_ms": pct(late, 99), "max_ms": late[-1], "early": sum(1 for x in late if x < 0),
            "cpu_p99_ms": pct(cpu, 99)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="runs due at one moment")
    parser.add_argument("--lead", type=float, default=15.0, help="seconds from the start to that moment")
    parser.add_argument("--checkout", help="run that checkout's SDK (its directory first on the path)")
    args = parser.parse_args()
    if args.checkout:
        sys.path.insert(0, os.path.abspath(args.checkout))
    print(json.dumps(asyncio.run(main(args))), flush=True)


if __name__ == "__main__":
    cli()
