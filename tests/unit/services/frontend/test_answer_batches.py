"""A worker's batch of task answers (POST /task-answers) is validated answer by answer, as
each would be alone, then sent as one group (Engine.respond_all): queued in order under one
produce wait, each refusal (a bad answer, the broker's error, the wait running out) that
answer's own result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from kadence_protocol import avro
from services.common import colocation
from services.common.command_notices import CommandNotice, NoticedCommands, NoticeOutcome
from services.frontend.deadlines import SameLengthWaits
from services.frontend.engine import Engine, TaskAnswer
from services.frontend.errors import InvalidArgument, Unavailable
from services.frontend.handlers import Handlers
from services.frontend.tokens import TaskToken, TokenKeys

pytestmark = pytest.mark.timeout(10)

KEYS = TokenKeys.of(["k" * 32])


class Producer:
    """Answers each record at once at the next offset, refuses those whose workflow id is in
    ``refuse``, and never answers those in ``hang``."""

    def __init__(self, refuse: frozenset[str] = frozenset(), hang: frozenset[str] = frozenset()) -> None:
        self.sent: list[bytes] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.refuse, self.hang = refuse, hang

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes, key: bytes, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        self.sent.append(key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if any(w in key.decode() for w in self.refuse):
            future.set_exception(KafkaTimeoutError())
        elif not any(w in key.decode() for w in self.hang):
            future.set_result(type("Metadata", (), {"partition": partition, "offset": len(self.sent)})())
        return future


def _engine(producer: Producer, taken: list[tuple[Any, ...]] | None = None) -> Engine:
    bus = colocation.ColocatedCommands(lambda *a: (taken if taken is not None else []).append(a))
    return Engine(instance_id="fe", producer=producer, replies=None, closes=None, reads=None,  # type: ignore[arg-type]
                  matching=None, commands=bus, token_keys=KEYS)  # type: ignore[arg-type]


def _token(workflow_id: str, kind: str = "activity", namespace: str = "default") -> TaskToken:
    return TaskToken(namespace, workflow_id, "run", 5, 1, kind, 1, "q")


def _completed(workflow_id: str) -> TaskAnswer:
    return TaskAnswer("RespondActivityTaskCompleted", _token(workflow_id), "w", {"result": "[1]", "workflow_task": None})


async def test_answers_are_queued_in_order_under_one_produce_wait() -> None:
    producer, taken = Producer(), list[tuple[Any, ...]]()
    engine = _engine(producer, taken)
    errors = await engine.respond_all([_completed(f"wf-{i}") for i in range(5)])
    assert errors == [None] * 5
    assert [k.decode().rsplit("wf-", 1)[-1] for k in producer.sent] == ["0", "1", "2", "3", "4"]
    assert len(taken) == 5 and all(t[-1] == engine.limits for t in taken)  # checked here, handed to history
    assert len(engine._produce_waits) == 1  # one wait for the batch, not one per answer


async def test_a_bad_answer_or_a_broker_refusal_is_that_answers_own_error() -> None:
    producer = Producer(refuse=frozenset({"wf-refused"}))
    engine = _engine(producer)
    bad = TaskAnswer("RespondActivityTaskCompleted", _token("wf-bad"), "w", {"result": "not json", "workflow_task": None})
    errors = await engine.respond_all([_completed("wf-1"), bad, _completed("wf-refused"), _completed("wf-2")])
    assert errors[0] is None and errors[3] is None
    assert isinstance(errors[1], InvalidArgument) and errors[1].status == 400
    assert isinstance(errors[2], Unavailable) and errors[2].status == 503
    assert len(producer.sent) == 3  # the bad one never left


async def test_answers_the_broker_has_not_taken_when_the_wait_runs_out_are_unavailable() -> None:
    producer = Producer(hang=frozenset({"wf-slow"}))
    engine = _engine(producer)
    engine._produce_waits = SameLengthWaits(0.05, slack=0.01)
    errors = await engine.respond_all([_completed("wf-1"), _completed("wf-slow")])
    assert errors[0] is None and isinstance(errors[1], Unavailable)
    assert producer.futures[1].cancelled()  # given up, as an expired await gives it up
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the expiry's cancellation was taken back


def _answer_item(operation: str, token: TaskToken, **body: Any) -> dict[str, Any]:
    return {"operation": operation, "body": {"task_token": token.encode(KEYS), "identity": "w", **body}}


async def test_a_batch_answers_each_item_in_its_place() -> None:
    producer = Producer()
    handlers = Handlers(_engine(producer))
    answers = [
        _answer_item("complete_activity_task", _token("wf-1"), result="[1]"),
        _answer_item("complete_activity_task", _token("wf-2", namespace="other"), result="[1]"),  # 403
        _answer_item("complete_workflow_task", _token("wf-3", kind="workflow"),
                     commands=[{"command_type": "CompleteWorkflowExecution", "attributes": {"result": "[2]"}}]),
        {"operation": "complete_activity_task", "body": {"identity": "w"}},  # no token: 400 from the schema
        _answer_item("fail_activity_task", _token("wf-4"),
                     failure={"message": "boom", "type": "E", "non_retryable": False}),
        _answer_item("complete_workflow_task", _token("wf-5", kind="workflow"),
                     commands=[{"command_type": "NoSuchCommand", "attributes": {}}]),  # 400
    ]
    status, answer = await handlers.answer_tasks({"namespace": "default"}, {}, {"answers": answers})
    assert status == 200
    results = answer["results"]  # type: ignore[index]
    assert [r["status"] for r in results] == [200, 403, 200, 400, 200, 400]
    assert results[3]["field"] == "task_token" and results[5]["field"] == "commands[0].command_type"
    assert [k.decode().rsplit("/", 1)[-1] for k in producer.sent] == ["wf-1", "wf-3", "wf-4"]


async def test_an_answer_refused_on_the_way_says_on_its_line_when_to_come_back() -> None:
    # An item cannot carry a header: its 503 line holds the Retry-After a lone call's 503
    # carries, as retry_after_ms (the field a 429 already has).
    handlers = Handlers(_engine(Producer(refuse=frozenset({"wf-2"}))))
    answers = [_answer_item("complete_activity_task", _token("wf-1"), result="[1]"),
               _answer_item("complete_activity_task", _token("wf-2"), result="[1]")]
    _, answer = await handlers.answer_tasks({"namespace": "default"}, {}, {"answers": answers})
    first, refused = answer["results"]  # type: ignore[index]
    assert first == {"status": 200, "answer": {}}
    assert (refused["status"], refused["error"], refused["retry_after_ms"]) == (503, "Unavailable", 1000)


async def test_a_batch_with_a_heartbeat_answers_each_item_as_its_own_call() -> None:
    producer = Producer()
    handlers = Handlers(_engine(producer))
    beats: list[str] = []

    async def heartbeat_activity_task(path: Any, query: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        beats.append(TaskToken.decode(body["task_token"], KEYS).workflow_id)
        return 200, {"cancel_requested": False}

    handlers.heartbeat_activity_task = heartbeat_activity_task  # type: ignore[method-assign]
    answers = [_answer_item("heartbeat_activity_task", _token("wf-1")),
               _answer_item("complete_activity_task", _token("wf-2"), result="[1]")]
    _, answer = await handlers.answer_tasks({"namespace": "default"}, {}, {"answers": answers})
    results = answer["results"]  # type: ignore[index]
    assert results == [{"status": 200, "answer": {"cancel_requested": False}}, {"status": 200, "answer": {}}]
    assert beats == ["wf-1"] and len(producer.sent) == 1


async def test_a_task_run_ahead_on_a_timer_goes_to_history_under_the_last_tasks_token() -> None:
    producer, taken = Producer(), list[tuple[Any, ...]]()
    handlers = Handlers(_engine(producer, taken))
    ahead = {"after_scheduled_event_id": 5, "after_started_time": 10, "started_time": 1010, "ahead_id": 3,
             "commands": [{"command_type": "CompleteWorkflowExecution", "attributes": {"result": "[2]"}}],
             "runs_timers_ahead": True}
    answers = [
        _answer_item("timer_ahead_workflow_task", _token("wf-1", kind="workflow"), timer_id="t", workflow_task=ahead),
        _answer_item("timer_ahead_workflow_task", _token("wf-2", kind="workflow"), timer_id="t"),  # no task: 400
        _answer_item("timer_ahead_workflow_task", _token("wf-3"), timer_id="t", workflow_task=ahead),  # 400
    ]
    _, answer = await handlers.answer_tasks({"namespace": "default"}, {}, {"answers": answers})
    assert [r["status"] for r in answer["results"]] == [200, 400, 400]  # type: ignore[index]
    (sent,) = taken
    name, record = avro.decode(next(a for a in sent if isinstance(a, bytes) and a[:1] == b"\xc3"))
    assert name == "RespondTimerRunAhead"
    assert record["run_id"] == "run" and record["scheduled_event_id"] == 5 and record["timer_id"] == "t"
    assert record["workflow_task"] == {**ahead, "after_ahead_id": 0}


class LaterProducer(Producer):
    """Answers each record at the next offset a loop turn after it was sent, as the broker's
    answer arrives after the request (aiokafka sets a produce batch's futures together)."""

    async def send(self, topic: str, value: bytes, key: bytes, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        self.sent.append(key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        metadata = type("Metadata", (), {"partition": partition, "offset": len(self.sent)})()
        asyncio.get_running_loop().call_soon(future.set_result, metadata)
        return future


class Owners:
    """History's owners as the bus sees them: records each notice request as it leaves."""

    def __init__(self) -> None:
        self.sent: list[list[CommandNotice]] = []

    async def notify(self, partition: int, notices: list[CommandNotice], timeout: float) -> NoticeOutcome:
        self.sent.append(list(notices))
        await asyncio.sleep(0.01)  # history's answer comes later
        return NoticeOutcome(offered=len(notices))

    async def close(self) -> None:
        pass


async def test_between_processes_the_command_notice_leaves_before_the_workers_answer() -> None:
    # The workflow waits for history to take the answer (the notice), nobody for the HTTP
    # answer to the worker: the notice request is out before respond_all returns.
    owners = Owners()
    bus = NoticedCommands(colocation.KafkaCommands(), owners)  # type: ignore[arg-type]
    engine = Engine(instance_id="fe", producer=LaterProducer(), replies=None, closes=None,  # type: ignore[arg-type]
                    reads=None, matching=None, commands=bus, token_keys=KEYS)  # type: ignore[arg-type]
    errors = await engine.respond_all([_completed("wf-1"), _completed("wf-2")])
    assert errors == [None, None]
    assert [[n.offset for n in notices] for notices in owners.sent] == [[1, 2]]  # one request for the batch
    await bus.close()
