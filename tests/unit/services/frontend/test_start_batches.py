"""A client's batch of starts (POST /workflow-starts) is checked item by item, as each start
would be alone, then the items that pass are produced as one group (Engine.start_all): queued
in order under one produce wait, each refusal (a bad item, the broker's error, the wait
running out, history's answer) that item's own result, and each item answered by its own
reply (the same request id twice: both answered, as two calls would be)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from kadence_protocol import avro
from services.common import colocation
from services.common.config import REPLY_TIMEOUT_MS_BOUNDS, Settings
from services.frontend import engine as engine_module
from services.frontend import validation
from services.frontend.closed import CloseWatcher
from services.frontend.deadlines import SameLengthWaits
from services.frontend.engine import Engine
from services.frontend.errors import Busy
from services.frontend.handlers import Handlers, Streamed
from services.frontend.replies import ReplyRouter
from services.frontend.tokens import TokenKeys

pytestmark = pytest.mark.timeout(10)


class Producer:
    """Takes each record at the next offset and has history answer it (``replies``): a
    workflow id holding ``taken`` is refused as running already; the broker refuses those
    holding ``refuse``, never answers those holding ``hang``, and no reply comes for those
    holding ``silent``."""

    def __init__(self, replies: ReplyRouter, *, refuse: str = "-refused", hang: str = "-hung",
                 silent: str = "-silent", slow: str = "-slow", reply_after: float = 0.0) -> None:
        self.replies = replies
        self.slow, self.reply_after = slow, reply_after  # history's reply to those holding ``slow`` comes late
        self.sent: list[str] = []
        self.grouped: list[bool] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.refuse, self.hang, self.silent = refuse, hang, silent

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes, key: bytes, partition: int,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        name, record = avro.decode(value)
        assert name == "StartWorkflowExecution"
        wid = record["workflow_id"]
        self.sent.append(wid)
        self.grouped.append(colocation.commands_grouped())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if self.refuse in wid:
            future.set_exception(KafkaTimeoutError())
        elif self.hang not in wid:
            future.set_result(type("Metadata", (), {"partition": partition, "offset": len(self.sent)})())
            if self.silent not in wid:
                ok = "-taken" not in wid
                reply = {"reply_to": record["reply_to"], "request_id": record["request_id"], "ok": ok,
                         "run_id": f"run-{wid}", "created": ok,
                         "error_type": None if ok else "WorkflowAlreadyStarted", "error_message": None}
                delay = self.reply_after if self.slow in wid else 0.0
                asyncio.get_running_loop().call_later(delay, self.replies.deliver, [reply])
        return future


class _Running:
    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str:
        return "Running"


def _engine(**options: Any) -> tuple[Engine, Producer, ReplyRouter]:
    # The real router's waiters and delivery, without its consumer (replies come from Producer).
    replies = ReplyRouter.__new__(ReplyRouter)
    replies._instance_id, replies._waiters = "fe", {}
    producer = Producer(replies)
    bus = colocation.ColocatedCommands(lambda *a: None)
    engine = Engine(instance_id="fe", producer=producer, replies=replies, closes=CloseWatcher(None),
                    reads=_Running(), matching=None, commands=bus,  # type: ignore[arg-type]
                    token_keys=TokenKeys.of(["k" * 32]), **options)
    return engine, producer, replies


def _start(workflow_id: str, **more: Any) -> dict[str, Any]:
    return {"workflow_id": workflow_id, "workflow_type": "W", "task_queue": "q", "input": [1], **more}


async def _results(handlers: Handlers, starts: list[Any]) -> dict[int, dict[str, Any]]:
    status, answer = await handlers.start_batch({"namespace": "default"}, {}, {"starts": starts})
    assert status == 200 and isinstance(answer, Streamed)
    results = [r async for group in answer.items for r in group]
    assert sorted(r["index"] for r in results) == list(range(len(starts)))
    return {r["index"]: r for r in results}


async def test_a_mixed_batch_answers_each_item_as_alone_and_queues_the_rest_in_order() -> None:
    engine, producer, replies = _engine()
    handlers = Handlers(engine)
    starts = [_start("wf-1"), {"workflow_type": "W", "task_queue": "q"}, _start("wf-bad", input="not an array"),
              _start("wf-2-taken"), _start("wf-3-refused"), _start("wf-4", wait_seconds=-1),
              _start("x" * 2000), "not an object", _start("wf-5")]
    by_index = await _results(handlers, starts)
    assert {i: r["status"] for i, r in by_index.items()} == {0: 201, 1: 400, 2: 400, 3: 409, 4: 503, 5: 400,
                                                              6: 400, 7: 400, 8: 201}
    assert by_index[0]["answer"] == {"run_id": "run-wf-1", "workflow_id": "wf-1"}
    assert (by_index[1]["field"], by_index[2]["field"]) == ("workflow_id", "input")
    assert (by_index[3]["error"], by_index[3]["field"]) == ("WorkflowAlreadyStarted", "workflow_id")
    assert (by_index[5]["field"], by_index[6]["field"], by_index[7]["field"]) == ("wait_seconds", "workflow_id",
                                                                                 "starts[7]")
    assert producer.sent == ["wf-1", "wf-2-taken", "wf-3-refused", "wf-5"]  # in the batch's order
    assert not any(producer.grouped)  # history in this process may take the first ahead, as alone
    assert len(engine._produce_waits) == 1  # one produce wait for the batch, not one per start
    assert not replies._waiters


async def test_the_same_request_id_twice_is_answered_twice_by_its_one_reply() -> None:
    engine, producer, replies = _engine()
    producer.silent = "wf-again"  # the second copy is not answered by a reply of its own
    by_index = await _results(Handlers(engine), [_start("wf-1", request_id="r-1"),
                                                 _start("wf-again", request_id="r-1")])
    assert by_index[0]["answer"]["run_id"] == by_index[1]["answer"]["run_id"] == "run-wf-1"
    assert not replies._waiters


async def test_the_produce_deadline_refuses_only_the_starts_the_broker_has_not_taken() -> None:
    engine, producer, replies = _engine()
    engine._produce_waits = SameLengthWaits(0.05, slack=0.01)
    by_index = await _results(Handlers(engine), [_start("wf-1"), _start("wf-2-hung"), _start("wf-3")])
    assert [by_index[i]["status"] for i in range(3)] == [201, 503, 201]
    assert producer.futures[1].cancelled()  # given up, as an expired await gives it up
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the expiry's cancellation was taken back
    assert not replies._waiters


async def test_a_start_history_does_not_answer_in_time_is_told_to_come_back() -> None:
    engine, _, replies = _engine()
    engine._reply_waits = SameLengthWaits(0.05, slack=0.01)
    by_index = await _results(Handlers(engine), [_start("wf-1"), _start("wf-2-silent")])
    assert by_index[0]["status"] == 201
    # 503: the client sends the item again alone, with the same request id.
    assert (by_index[1]["status"], by_index[1]["error"]) == (503, "Unavailable")
    assert by_index[1]["retry_after_ms"] == 1000  # the lone call's Retry-After, on the item's line
    assert "request_id" in by_index[1]["message"]
    with pytest.raises(Busy) as alone:
        await engine.start(validation.start_request("default", _start("wf-3-silent")))
    assert alone.value.status == 503 and alone.value.headers() == {"Retry-After": "1"}
    assert not replies._waiters


def test_a_command_is_answered_within_the_sdks_shortest_call_timeout() -> None:
    # The SDK's shortest timeout is a start that also waits for its outcome (wait + 15 s).
    assert engine_module.ANSWER_BOUND == engine_module.PRODUCE_TIMEOUT + engine_module.REPLY_TIMEOUT
    assert engine_module.ANSWER_BOUND < 30 + 15 - 10  # room left for the HTTP exchange itself
    # So does the longest reply wait KADENCE_REPLY_TIMEOUT_MS takes, and the default is its own.
    low, high = REPLY_TIMEOUT_MS_BOUNDS
    assert engine_module.PRODUCE_TIMEOUT + high / 1000 <= 30 + 15 - 10
    assert low / 1000 <= engine_module.REPLY_TIMEOUT <= high / 1000
    assert Settings().reply_timeout_ms == engine_module.REPLY_TIMEOUT * 1000


async def test_the_reply_wait_is_the_engines_own() -> None:
    # KADENCE_REPLY_TIMEOUT_MS reaches the engine as reply_timeout: the Busy comes after it,
    # and the answer bound (a start's wait counts against it) moves with it.
    engine, _, replies = _engine(reply_timeout=0.05)
    assert engine.answer_bound == engine_module.PRODUCE_TIMEOUT + 0.05
    began = asyncio.get_running_loop().time()
    with pytest.raises(Busy, match=r"within 0\.05 s"):
        await engine.start(validation.start_request("default", _start("wf-1-silent")))
    assert asyncio.get_running_loop().time() - began < 1.0
    assert not replies._waiters


@pytest.mark.parametrize("together", [True, False])
async def test_a_start_that_waits_for_its_outcome_counts_its_wait_from_the_call(together: bool) -> None:
    # History took most of the wait to answer: the answer comes when the wait is up, not a
    # whole wait later (which held a start past its caller's timeout under load).
    engine, producer, replies = _engine()
    producer.reply_after = 0.3
    loop = asyncio.get_running_loop()
    began = loop.time()
    if together:
        by_index = await _results(Handlers(engine), [_start("wf-1-slow", wait_seconds=0.5)])
        answer = by_index[0]["answer"]
    else:
        answer = await engine.start(validation.start_request("default", _start("wf-1-slow")), 0.5)
    took = loop.time() - began
    assert answer == {"run_id": "run-wf-1-slow", "workflow_id": "wf-1-slow", "outcome": {"status": "Running"}}
    assert 0.45 <= took < 0.7, took
    assert not replies._waiters


async def test_a_caller_that_goes_away_leaves_no_reply_waiting() -> None:
    engine, producer, replies = _engine()
    producer.silent = "wf"  # no reply comes: every start is still waiting when the caller leaves
    _, answer = await Handlers(engine).start_batch({"namespace": "default"}, {}, {"starts": [
        _start("wf-1"), _start("wf-2"), {"workflow_type": "W"}]})
    assert isinstance(answer, Streamed)
    first = await answer.items.__anext__()
    assert [r["index"] for r in first] == [2]  # the refusal is known at once
    await answer.items.aclose()
    assert producer.sent == ["wf-1", "wf-2"]
    assert not replies._waiters
