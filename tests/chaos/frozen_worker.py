"""A worker in a process of its own, for tests that freeze it (SIGSTOP) mid-activity.

``python -m tests.chaos.frozen_worker URL TASK_QUEUE DIR``: runs ``slow_step``, which writes
``DIR/started-<attempt>`` when an attempt starts, heartbeats until ``DIR/go`` exists, then
returns the value with the attempt and ``frozen-worker``; every answer the worker sends is
logged to its stdout.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from kadence import Client, Worker, activity

DIR = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(".")


@activity.defn(name="slow_step")
async def slow_step(value: str) -> str:
    attempt = activity.info().attempt
    (DIR / f"started-{attempt}").write_text("")
    while not (DIR / "go").exists():
        activity.heartbeat(attempt)
        await asyncio.sleep(0.1)
    print(f"attempt {attempt} returns (pid {os.getpid()}, token {hash(activity.info().task_token)})", flush=True)
    return f"{value}@{attempt}:frozen-worker"


async def main(url: str, task_queue: str) -> None:
    async with await Client.connect(url, namespace="default", identity="frozen-worker") as client, \
            Worker(client, task_queue=task_queue, activities=[slow_step]):
        (DIR / "ready").write_text("")
        await asyncio.Event().wait()  # until the test stops the process


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
