"""The tasks of one poll's answer all run before any of their answers leaves, and the
answers then leave together (kadence/_worker/poller.py Poller._start, answers.py hold)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kadence._worker.answers import AnswerBatcher
from kadence._worker.poller import Poller, Slots

pytestmark = pytest.mark.timeout(10)


class Frontend:
    """Hands out one answer of ``count`` tasks, then waits; records every call in order."""

    def __init__(self, count: int, log: list[str]) -> None:
        self.count = count
        self.log = log
        self.polls = 0

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   **_: Any) -> dict[str, Any]:
        if path.endswith("/poll"):
            self.polls += 1
            if self.polls > 1:
                await asyncio.Event().wait()
            return {"tasks": [{"task_token": f"t{i}"} for i in range(self.count)]}
        assert body is not None
        if path == "/task-answers":
            self.log.append("sent " + ",".join(a["body"]["task_token"] for a in body["answers"]))
            return {"results": [{"status": 200, "answer": {}} for _ in body["answers"]]}
        self.log.append(f"sent {body['task_token']}")
        return {}


async def _run(count: int) -> list[str]:
    log: list[str] = []
    frontend = Frontend(count, log)
    answers = AnswerBatcher(frontend)  # type: ignore[arg-type]
    done = asyncio.Event()

    async def process(task: Mapping[str, Any]) -> None:
        log.append(f"woke {task['task_token']}")
        await answers.call("POST", "/workflow-tasks/complete", body={"task_token": task["task_token"]})
        if sum(1 for line in log if line.startswith("sent")) and len([x for x in log if x.startswith("woke")]) == count:
            done.set()

    poller = Poller(frontend, "/workflow-tasks/poll", process=process, slots=Slots(50),  # type: ignore[arg-type]
                    identity="test", max_tasks=count + 1, wait_seconds=1, answers=answers)
    running = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.wait_for(asyncio.gather(*poller.running), 5)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    return log


async def test_every_task_of_an_answer_runs_before_the_answers_leave_together() -> None:
    log = await _run(3)
    assert log == ["woke t0", "woke t1", "woke t2", "sent t0,t1,t2"]


async def test_a_lone_task_answers_at_once() -> None:
    assert await _run(1) == ["woke t0", "sent t0"]
