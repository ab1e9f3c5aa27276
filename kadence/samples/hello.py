"""Hello world: a workflow that waits for a signal, then greets through an activity.

Run ``kadence dev`` in one terminal and ``python -m kadence.samples.hello`` in another.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

from kadence import Client, Worker, activity, workflow


@activity.defn
async def compose_greeting(greeting: str, name: str) -> str:
    return f"{greeting}, {name}!"


@workflow.defn
class HelloWorkflow:
    def __init__(self) -> None:
        self.greeting: str | None = None

    @workflow.run
    async def run(self, name: str) -> str:
        # Durable: the workflow may wait here for days, across restarts of everything.
        await workflow.wait_condition(lambda: self.greeting is not None)
        assert self.greeting is not None
        greeting: str = await workflow.execute_activity(
            compose_greeting, self.greeting, name, start_to_close_timeout=timedelta(seconds=10))
        return greeting

    @workflow.signal
    def set_greeting(self, greeting: str) -> None:
        self.greeting = greeting

    @workflow.query
    def waiting(self) -> bool:
        return self.greeting is None


async def main(target: str = "http://127.0.0.1:7233") -> None:
    client = await Client.connect(target, namespace="default")
    async with Worker(client, task_queue="hello", workflows=[HelloWorkflow], activities=[compose_greeting]):
        handle = await client.start_workflow(HelloWorkflow.run, "World", id=f"hello-{uuid.uuid4().hex[:8]}",
                                             task_queue="hello")
        print(f"started {handle.workflow_id} (run {handle.run_id})")
        await handle.signal(HelloWorkflow.set_greeting, "Hello")
        print("result:", await handle.result())
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
