"""The benchmark workloads as Restate workflows, served by hypercorn from the scratch venv.

    <scratch>/venv/bin/hypercorn benchmarks.peers.restate.service:app --bind 127.0.0.1:PORT

Runs in the scratch venv made by ``install.py`` (restate-sdk is not a Kadence dependency).
The same workloads as ``benchmarks/workflows.py``: one "activity" (a ``ctx.run`` step that
returns its input), and a sleep on a durable timer that reads the wall clock right before
calling sleep and right after it returns, as the Kadence workflow does.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import restate

one_activity = restate.Workflow("OneActivity")
one_timer = restate.Workflow("OneTimer")


async def identity(value: Any) -> Any:
    return value


@one_activity.main()
async def run(ctx: restate.WorkflowContext, value: Any) -> Any:
    return await ctx.run_typed("identity", identity, value=value)


@one_timer.main(name="run")
async def sleep_run(ctx: restate.WorkflowContext, seconds: float) -> list[float]:
    # Measurement only: a replay after a suspension would re-read `before` after the wake-up,
    # which the driver sees (a sample below half the sleep) and leaves out, counting it.
    before = time.time()
    await ctx.sleep(timedelta(seconds=seconds))
    return [before, time.time()]


app = restate.app([one_activity, one_timer])
