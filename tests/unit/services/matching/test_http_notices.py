"""Matching's internal endpoint for task notices (services/matching/http.py): a notice that
gives a waiting poll its task lets that poll's answer go out before its own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.common.matching.notices import UNPUBLISHED, NoticeOutcome, TaskNotice, notices_to_json
from services.matching.http import InternalServer

pytestmark = pytest.mark.timeout(10)


class Service:
    """Matching as the endpoint sees it: one poll waits, and a notice hands it its task."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    async def poll(self, namespace: str, task_queue: str, kind: str, max_tasks: int, wait_seconds: float,
                   identity: str) -> list[Any]:
        return await self.waiting

    async def noticed(self, partition: int, notices: list[TaskNotice]) -> NoticeOutcome:
        if self.waiting.done():
            return NoticeOutcome(left=len(notices))
        self.waiting.set_result([])
        return NoticeOutcome(matched=len(notices))


class Request:
    """What the handlers read of a request: its body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._raw = json.dumps(body).encode()

    async def read(self) -> bytes:
        return self._raw


async def test_a_notice_that_gives_a_waiting_poll_its_task_answers_after_the_poll() -> None:
    service = Service()
    server = InternalServer(service)  # type: ignore[arg-type]
    poll = asyncio.create_task(server._poll(Request({  # type: ignore[arg-type]
        "namespace": "default", "task_queue": "q", "kind": "activity", "wait_seconds": 5})))
    await asyncio.sleep(0)  # the poll waits
    notice = Request(notices_to_json(0, [TaskNotice(UNPUBLISHED, b"t")]))
    answer = await server._notice(notice)  # type: ignore[arg-type]
    assert json.loads(answer.body)["matched"] == 1  # type: ignore[arg-type]
    assert poll.done()  # the worker's answer was ready first
    assert json.loads((await poll).body) == {"tasks": []}  # type: ignore[arg-type]

