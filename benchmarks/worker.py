"""A benchmark worker in its own process, so its CPU is measured apart from the client's."""

from __future__ import annotations

import argparse
import asyncio
import signal

from kadence import Client, Worker
from services.common import loop as _loop

from .workflows import ACTIVITIES, WORKFLOWS


async def main(target: str, task_queue: str, workflow_tasks: int, tasks_per_poll: int, sdk_defaults: bool) -> None:
    client = await Client.connect(target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sdk_defaults:
        worker = Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES)
    else:
        worker = Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES,
                        max_concurrent_activities=500, max_concurrent_workflow_tasks=workflow_tasks,
                        max_tasks_per_poll=tasks_per_poll, max_cached_workflows=20_000)
    async with worker:
        print("worker ready", flush=True)
        await stop.wait()
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--task-queue", default="bench")
    parser.add_argument("--workflow-tasks", type=int, default=20, help="workflow tasks run at once")
    parser.add_argument("--tasks-per-poll", type=int, default=10, help="tasks one poll may bring")
    parser.add_argument("--sdk-defaults", action="store_true",
                        help="the Worker as a user writes it: SDK defaults, asyncio.run, CPython's GC settings")
    args = parser.parse_args()
    job = main(args.target, args.task_queue, args.workflow_tasks, args.tasks_per_poll, args.sdk_defaults)
    # A user's worker runs on the standard loop with the default collector; the tuned worker
    # runs as Kadence's own processes do (uvloop, tuned GC).
    asyncio.run(job) if args.sdk_defaults else _loop.run(job)
