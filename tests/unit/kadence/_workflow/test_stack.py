"""The built-in ``__stack_trace`` query (kadence/_workflow/stack.py): the await chain of each
pending coroutine, and the traceback-shaped text that shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kadence import workflow
from kadence._workflow.stack import (
    AwaitPoint,
    TaskStack,
    await_points,
    format_stack_trace,
)
from kadence_protocol.queries import STACK_TRACE_QUERY
from tests.helpers import eventually
from tests.unit._fake_history import Driver, FakeHistory


def test_the_text_reads_like_a_traceback() -> None:
    text = format_stack_trace([
        TaskStack("workflow.run", (AwaitPoint("/app/orders.py", 12, "Order.run", "await self.approve()"),
                                   AwaitPoint("/app/orders.py", 30, "Order.approve", ""))),
        TaskStack("signal.go", ()),
    ])
    assert text == ('Task workflow.run:\n'
                    '  File "/app/orders.py", line 12, in Order.run\n'
                    '    await self.approve()\n'
                    '  File "/app/orders.py", line 30, in Order.approve\n'
                    '\n'
                    'Task signal.go:\n'
                    '  (not started yet)')
    assert "no coroutine is waiting" in format_stack_trace([])


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _inner(event)


async def test_the_await_chain_outermost_first_with_source_lines() -> None:
    event = asyncio.Event()
    task = asyncio.ensure_future(_outer(event))
    # Once the task has run up to its wait, the chain reaches the event.
    def chain() -> tuple[AwaitPoint, ...] | None:
        points = await_points(task.get_coro())
        return points if len(points) >= 3 else None
    points = await eventually(chain, what="the task waiting on the event")
    assert [p.function for p in points[:3]] == ["_outer", "_inner", "Event.wait"]
    assert points[0].line == "await _inner(event)" and points[0].filename == __file__
    event.set()
    await task
    assert await_points(task.get_coro()) == ()


@workflow.defn
class Parked:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> None:
        workflow_task = asyncio.get_running_loop().create_task(self.helper(), name="helper")
        await workflow.wait_condition(lambda: self.go)
        await workflow_task

    async def helper(self) -> None:
        await workflow.sleep(60)

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


def test_a_waiting_workflow_answers_the_built_in_query_without_user_code() -> None:
    history = FakeHistory("Parked")
    driver = Driver(Parked, history)
    driver.step()
    text = driver.runner.query(STACK_TRACE_QUERY, [])
    run_block, helper_block = text.split("\n\n")
    assert run_block.startswith("Task workflow.run:") and "in Parked.run" in run_block
    assert "await workflow.wait_condition(lambda: self.go)" in run_block
    assert helper_block.startswith("Task helper:") and "await workflow.sleep(60)" in helper_block


def test_the_sdks_own_frames_are_left_out() -> None:
    history = FakeHistory("Parked")
    driver = Driver(Parked, history)
    driver.step()
    text = driver.runner.query(STACK_TRACE_QUERY, [])
    sdk = Path(workflow.__file__).parent  # the installed SDK, not these tests (which mirror its layout)
    assert str(sdk) not in text, text
    run_block = text.split("\n\n")[0]
    assert run_block.splitlines()[1].endswith("in Parked.run"), run_block  # the user's frame comes first
