"""Commands a frontend in this process queues as a group (a worker's batch of task answers)
are taken by their shard together once acknowledged, none of them ahead of its
acknowledgement alone (services/common/colocation.py grouped_commands, HistoryService.take_queued)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.common import colocation
from services.history.service import HistoryService

pytestmark = pytest.mark.timeout(10)


class Shard:
    stopped = False

    def __init__(self) -> None:
        self.taken: list[tuple[str, int]] = []
        self.in_flight: list[tuple[str, bytes, int | None]] = []  # queued and answered, in order

    def offer_early(self, command: Any, acked: asyncio.Future[Any]) -> None:
        self.taken.append(("early", command.offset))

    def offer(self, command: Any) -> None:
        self.taken.append(("acknowledged", command.offset))

    def queued(self, key: bytes) -> None:
        self.in_flight.append(("queued", key, None))

    def answered(self, key: bytes, offset: int | None) -> None:
        self.in_flight.append(("answered", key, offset))


def _service(shard: Shard) -> HistoryService:
    service = HistoryService.__new__(HistoryService)
    service._gate = None
    service._consumer = None
    service._stopping = False
    service.shards = {0: shard}  # type: ignore[dict-item]
    return service


async def _take(service: HistoryService, offset: int) -> None:
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    service.take_queued(0, b"k", b"v", (), acked)
    acked.set_result(SimpleNamespace(offset=offset))
    await asyncio.sleep(0)  # the acknowledgement's callbacks


async def test_a_lone_command_is_offered_ahead_of_its_acknowledgement_too() -> None:
    shard = Shard()
    await _take(_service(shard), 7)
    assert shard.taken == [("early", -1), ("acknowledged", 7)]


async def test_each_command_is_counted_in_flight_until_the_broker_answers_it() -> None:
    # A firing of the run waits for its commands in flight (Intake.queued), refused ones too.
    shard = Shard()
    service = _service(shard)
    await _take(service, 7)
    refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    service.take_queued(0, b"k2", b"v", (), refused)
    assert shard.in_flight[-1] == ("queued", b"k2", None)
    refused.set_exception(RuntimeError("the broker said no"))
    await asyncio.sleep(0)
    assert shard.in_flight == [("queued", b"k", None), ("answered", b"k", 7),
                               ("queued", b"k2", None), ("answered", b"k2", None)]
    # Answered before it is offered: a firing held for it then waits for its offset.
    assert ("acknowledged", 7) in shard.taken


async def test_commands_of_a_group_are_offered_once_acknowledged_only() -> None:
    shard = Shard()
    service = _service(shard)
    with colocation.grouped_commands():
        await asyncio.gather(_take(service, 7), _take(service, 8))  # tasks started within inherit it
    assert shard.taken == [("acknowledged", 7), ("acknowledged", 8)]
    assert not colocation.commands_grouped()


async def test_the_frontend_queues_a_batch_of_task_answers_as_a_group() -> None:
    from services.frontend.engine import TaskAnswer
    from services.frontend.handlers import Handlers
    from services.frontend.tokens import TaskToken

    seen: list[bool] = []
    token = TaskToken("default", "wf", "run", 2, 1, "workflow")

    async def complete_workflow_task(path: Any, body: Any) -> TaskAnswer:
        seen.append(colocation.commands_grouped())
        return TaskAnswer("RespondWorkflowTaskCompleted", token, "w", {})

    class Engine:
        async def respond_all(self, answers: list[TaskAnswer]) -> list[None]:
            seen.append(colocation.commands_grouped())
            return [None] * len(answers)

    handlers = Handlers.__new__(Handlers)
    handlers.engine = Engine()  # type: ignore[assignment]
    handlers._complete_workflow_task = complete_workflow_task  # type: ignore[method-assign]
    body = {"task_token": "t", "commands": [], "identity": "w"}
    _, answer = await handlers.answer_tasks(
        {"namespace": "default"}, {}, {"answers": [{"operation": "complete_workflow_task", "body": body}] * 2})
    assert [r["status"] for r in answer["results"]] == [200, 200]  # type: ignore[index]
    assert seen == [True, True, True] and not colocation.commands_grouped()
