"""An activity answer or heartbeat with ``current_attempt`` (what an async completion's handle
sends) is refused with 404 ActivityNotFound when its token's attempt is over (finished,
retried, its run closed or gone); without it, as a worker sends, it is taken unchecked. By
ids, a caller that may not poll the activity's task queue is told what it would be told of
an activity that does not exist."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.frontend.auth import Authenticator, Grant, Permission, Principal, served, serving
from services.frontend.errors import ActivityNotFound, NotFound, WorkflowNotFound
from services.frontend.handlers import Handlers
from services.frontend.tokens import TaskToken
from tests.unit.services.frontend.test_answer_batches import KEYS, Producer, _engine, _token

pytestmark = pytest.mark.timeout(10)


@dataclass
class Execution:
    closed: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    run_id: str = "run"


class Reads:
    def __init__(self, execution: Execution | None, events: list[dict[str, Any]] | None = None) -> None:
        self.found = execution
        self.history = events or []

    async def events(self, run_id: str, first: int, last: int | None, limit: int) -> list[dict[str, Any]]:
        return [e for e in self.history if first <= e["event_id"] <= (last or 1 << 62)][:limit]

    async def execution(self, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
        if self.found is None:
            raise WorkflowNotFound("gone")
        return self.found


RUNNING = Execution(summary={"activities": {"5": {"attempt": 1}}})
# An attempt whose retry backoff runs till well after now: no worker has it yet.
BACKING_OFF = {"state": "Scheduled", "scheduled_time": int(time.time() * 1000) + 3_600_000}
STALE = [None, Execution(closed=True, summary=RUNNING.summary), Execution(summary={"activities": {}}),
         Execution(summary={"activities": {"5": {"attempt": 2}}}),
         Execution(summary={"activities": {"5": {"attempt": 1, **BACKING_OFF}}})]


def _handlers(execution: Execution | None, events: list[dict[str, Any]] | None = None) -> tuple[Handlers, Producer]:
    producer = Producer()
    engine = _engine(producer)
    engine._reads = Reads(execution, events)  # type: ignore[assignment]
    return Handlers(engine), producer


def _body(**extra: Any) -> dict[str, Any]:
    return {"task_token": _token("wf-1").encode(KEYS), "identity": "outside", **extra}


@pytest.mark.parametrize("execution", STALE, ids=["gone", "closed", "finished", "retried", "backing-off"])
@pytest.mark.parametrize("call, fields", [
    ("complete_activity_task", {"result": "1"}),
    ("fail_activity_task", {"failure": {"message": "boom", "type": "E", "non_retryable": False}}),
    ("heartbeat_activity_task", {}),
    ("cancel_activity_task", {}),
])
async def test_a_stale_token_is_refused_when_the_current_attempt_is_asked(
        execution: Execution | None, call: str, fields: dict[str, Any]) -> None:
    handlers, producer = _handlers(execution)
    with pytest.raises(ActivityNotFound, match="stale task token") as refused:
        await getattr(handlers, call)({"namespace": "default"}, {}, _body(current_attempt=True, **fields))
    assert producer.sent == [] and refused.value.body()["error"] == "ActivityNotFound"


FAILURE = {"message": "boom", "type": "E", "stack_trace": "", "non_retryable": False, "details": None}
ENDED = [{"event_id": 5, "event_type": "ActivityTaskScheduled", "attributes": {}},
         {"event_id": 7, "event_type": "ActivityTaskStarted", "attributes": {"scheduled_event_id": 5, "attempt": 1}},
         {"event_id": 8, "event_type": "ActivityTaskCompleted",
          "attributes": {"scheduled_event_id": 5, "started_event_id": 7, "result": "1", "identity": "outside"}}]


async def test_a_repeat_of_the_answer_that_ended_the_attempt_is_answered_ok_and_not_sent_again() -> None:
    handlers, producer = _handlers(Execution(summary={"activities": {}}), ENDED)
    status, _ = await handlers.complete_activity_task({"namespace": "default"}, {}, _body(result="1", current_attempt=True))
    assert status == 200 and producer.sent == []
    with pytest.raises(ActivityNotFound):  # another result: refused
        await handlers.complete_activity_task({"namespace": "default"}, {}, _body(result="2", current_attempt=True))
    with pytest.raises(ActivityNotFound):  # another kind of answer: refused
        await handlers.fail_activity_task({"namespace": "default"}, {},
                                          _body(failure=FAILURE, current_attempt=True))
    retried = Execution(summary={"activities": {"5": {"attempt": 2, "last_failure": FAILURE}}})
    handlers, producer = _handlers(retried)
    status, _ = await handlers.fail_activity_task({"namespace": "default"}, {},
                                                  _body(failure=FAILURE, current_attempt=True))
    assert status == 200 and producer.sent == []
    with pytest.raises(ActivityNotFound):
        await handlers.fail_activity_task({"namespace": "default"}, {},
                                          _body(failure={**FAILURE, "message": "bang"}, current_attempt=True))


async def test_the_running_attempt_is_taken_and_unchecked_answers_are_as_before() -> None:
    handlers, producer = _handlers(RUNNING)
    status, _ = await handlers.complete_activity_task({"namespace": "default"}, {}, _body(result="1", current_attempt=True))
    assert status == 200 and len(producer.sent) == 1
    stale, producer = _handlers(None)
    status, _ = await stale.complete_activity_task({"namespace": "default"}, {}, _body(result="1"))
    assert status == 200 and len(producer.sent) == 1  # history drops it, as a worker's late answer


async def test_by_ids_the_running_attempts_token_is_answered() -> None:
    running = Execution(summary={"activities": {"9": {"activity_id": "a-1", "attempt": 3, "task_queue": "q",
                                                      "started_time": 12}}})
    handlers, _ = _handlers(running)
    path = {"namespace": "default", "workflow_id": "wf-1", "activity_id": "a-1"}
    status, answer = await handlers.activity_task_token(path, {}, {})
    token = TaskToken.decode(answer["task_token"], KEYS)  # type: ignore[index]
    assert status == 200 and (token.run_id, token.scheduled_event_id, token.attempt, token.kind, token.task_queue) \
        == ("run", 9, 3, "activity", "q")
    with pytest.raises(ActivityNotFound, match="no activity 'a-2' running"):
        await handlers.activity_task_token({**path, "activity_id": "a-2"}, {}, {})
    closed = Execution(closed=True, summary=running.summary)
    with pytest.raises(NotFound):
        await _handlers(closed)[0].activity_task_token(path, {}, {})


async def test_by_ids_an_activity_waiting_out_its_retry_backoff_has_no_running_attempt() -> None:
    due = {"activity_id": "a-1", "attempt": 2, "task_queue": "q", "state": "Scheduled",
           "scheduled_time": int(time.time() * 1000) - 10}
    path = {"namespace": "default", "workflow_id": "wf-1", "activity_id": "a-1"}
    status, _ = await _handlers(Execution(summary={"activities": {"9": due}}))[0].activity_task_token(path, {}, {})
    assert status == 200  # due: handed to a worker, or about to be
    waiting = Execution(summary={"activities": {"9": {**due, **BACKING_OFF}}})
    with pytest.raises(NotFound, match="retry backoff"):
        await _handlers(waiting)[0].activity_task_token(path, {}, {})


async def test_a_workers_heartbeat_is_not_told_to_stop_by_the_backoff_read_on_this_frontends_clock() -> None:
    # The attempt is the worker's (it was handed it); a frontend clock behind history's may
    # still see its backoff running: only an async completion's check refuses on that.
    handlers, _ = _handlers(Execution(summary={"activities": {"5": {"attempt": 1, **BACKING_OFF}}}))
    status, answer = await handlers.heartbeat_activity_task({"namespace": "default"}, {}, _body())
    assert status == 200 and answer == {"cancel_requested": False}


async def test_by_ids_a_caller_without_the_queues_grant_cannot_tell_a_hidden_activity_from_a_missing_one() -> None:
    running = Execution(summary={"activities": {"9": {"activity_id": "a-1", "attempt": 1, "task_queue": "orders"}}})
    missing = Execution(summary={"activities": {"9": {"activity_id": "a-0", "attempt": 1, "task_queue": "cards"}}})
    path = {"namespace": "default", "workflow_id": "wf-1", "activity_id": "a-1"}

    async def answer(execution: Execution, queues: frozenset[str] | None) -> tuple[int, dict[str, Any]]:
        principal = Principal("w", (Grant("default", frozenset({Permission.WORKER}), queues),))
        mark = serving(Authenticator(), principal)
        try:
            status, body = await _handlers(execution)[0].activity_task_token(path, {}, {})
            return status, dict(body)  # type: ignore[arg-type]
        except NotFound as exc:
            return exc.status, exc.body()
        finally:
            served(mark)

    hidden, absent = await answer(running, frozenset({"cards"})), await answer(missing, frozenset({"cards"}))
    assert hidden == absent and hidden[0] == 404 and hidden[1]["error"] == "ActivityNotFound"
    assert (await answer(missing, None))[0] == 404  # granted every queue: missing is missing
    status, body = await answer(running, frozenset({"orders"}))
    assert status == 200 and TaskToken.decode(body["task_token"], KEYS).task_queue == "orders"
