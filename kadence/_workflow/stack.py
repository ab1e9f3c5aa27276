"""The built-in ``__stack_trace`` query: where each coroutine of a workflow waits.

A worker answers it without user code, from the run's deterministic loop: for every task
still pending on that loop (``workflow.run``, signal and update handlers, tasks the code
started) the chain of coroutines it is suspended in, outermost first, each as file, line,
function and source line. ``kadence workflow describe`` and the web UI's run page show it,
to answer "what is this running workflow waiting for?".
"""

from __future__ import annotations

import asyncio
import linecache
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

MAX_DEPTH = 100  # await chains deeper than this are cut (a recursion gone wrong must not hang the worker)


@dataclass(frozen=True)
class AwaitPoint:
    """One suspended coroutine: where it waits."""

    filename: str
    lineno: int
    function: str
    line: str = ""  # the source line, when the file is readable


@dataclass(frozen=True)
class TaskStack:
    name: str
    points: tuple[AwaitPoint, ...]


def _frame_and_next(obj: Any) -> tuple[FrameType | None, Any]:
    """The frame of a coroutine, generator or async generator, and what it awaits."""
    for frame_attr, next_attr in (("cr_frame", "cr_await"), ("gi_frame", "gi_yieldfrom"), ("ag_frame", "ag_await")):
        if hasattr(obj, frame_attr):
            return getattr(obj, frame_attr), getattr(obj, next_attr, None)
    return None, None


def await_points(coro: Any) -> tuple[AwaitPoint, ...]:
    """The await chain of a suspended coroutine, outermost first."""
    points: list[AwaitPoint] = []
    current = coro
    while current is not None and len(points) < MAX_DEPTH:
        frame, current = _frame_and_next(current)
        if frame is None:
            break
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno).strip()
        points.append(AwaitPoint(code.co_filename, frame.f_lineno, getattr(code, "co_qualname", code.co_name), line))
    return tuple(points)


# The SDK's own frames (interceptor chain, the instance's futures) say nothing about the
# user's code: they are left out, unless nothing else is left.
_SDK_DIR = str(Path(__file__).resolve().parent.parent) + os.sep


def user_points(points: tuple[AwaitPoint, ...]) -> tuple[AwaitPoint, ...]:
    """``points`` without the frames of the SDK itself (all of them if only those)."""
    mine = tuple(p for p in points if not os.path.abspath(p.filename).startswith(_SDK_DIR))
    return mine or points


def task_stacks(loop: asyncio.AbstractEventLoop, run_task: asyncio.Task[Any] | None = None) -> list[TaskStack]:
    """The pending tasks of ``loop``, ``workflow.run`` first, then by name. ``run_task``: the
    run's own task, which is not in asyncio's registry of tasks (instance.py)."""
    found = asyncio.all_tasks(loop)
    if run_task is not None:
        found.add(run_task)
    tasks = [t for t in found if not t.done()]
    tasks.sort(key=lambda t: (t.get_name() != "workflow.run", t.get_name()))
    return [TaskStack(t.get_name(), user_points(await_points(t.get_coro()))) for t in tasks]


def format_stack_trace(stacks: Iterable[TaskStack]) -> str:
    """The stacks as text, in the shape of a Python traceback (outermost call first)."""
    blocks = []
    for stack in stacks:
        lines = [f"Task {stack.name}:"]
        for p in stack.points:
            lines.append(f'  File "{p.filename}", line {p.lineno}, in {p.function}')
            if p.line:
                lines.append(f"    {p.line}")
        if not stack.points:
            lines.append("  (not started yet)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "(no coroutine is waiting: the run has finished or not started)"


def stack_trace(loop: asyncio.AbstractEventLoop, run_task: asyncio.Task[Any] | None = None) -> str:
    return format_stack_trace(task_stacks(loop, run_task))
