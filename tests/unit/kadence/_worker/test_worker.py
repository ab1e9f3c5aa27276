"""The worker's task processing against an in-memory transport (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from kadence import ApplicationError, Client, Worker, activity
from kadence._activity import ActivityDefinition, current_context
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence._worker.poller import Poller, Slots
from kadence._worker.workflow_tasks import WorkflowTaskProcessor
from kadence._workflow.definition import WorkflowDefinition
from tests.helpers import eventually
from tests.unit._fake_history import FakeHistory
from tests.unit.kadence._workflow.test_runner import Buggy, Greet, GreetChanged, Waiter

pytestmark = pytest.mark.timeout(30)


class FakeTransport:
    """Records every call; serves a FakeHistory's events in small pages."""

    def __init__(self, history: FakeHistory | None = None, page: int = 3) -> None:
        self.history = history
        self.page = page
        self.calls: list[tuple[str, str, Any]] = []
        self.polls: list[list[dict[str, Any]]] = []

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self.calls.append((method, path, body if body is not None else params))
        if path.endswith("/history"):
            assert self.history is not None
            start = int((params or {}).get("next_page_token") or 0)
            chunk = self.history.events[start : start + self.page]
            more = start + self.page < len(self.history.events)
            return {"events": chunk, "next_page_token": str(start + self.page) if more else None}
        if path.endswith("/poll"):
            await asyncio.sleep(0.01)
            return {"tasks": self.polls.pop(0) if self.polls else []}
        return {}

    async def close(self) -> None:
        pass

    def posted(self, suffix: str) -> list[Any]:
        return [body for method, path, body in self.calls if method == "POST" and path.endswith(suffix)]


def _task(history: FakeHistory) -> dict[str, Any]:
    events = history.task_events()
    return {
        "task_token": f"tok-{events[-1]['event_id']}",
        "workflow_id": "wf-1",
        "run_id": history.run_id,
        "workflow_type": history.events[0]["attributes"]["workflow_type"],
        "scheduled_event_id": events[-1]["event_id"],
        "attempt": 1,
        "events": events,
    }


def _processor(transport: FakeTransport, *workflows: type, cache: int = 10) -> WorkflowTaskProcessor:
    return WorkflowTaskProcessor(
        transport,
        namespace="default",
        workflows=[WorkflowDefinition.of(w) for w in workflows],
        identity="test",
        max_cached_workflows=cache,
    )


async def test_cached_run_applies_only_new_events() -> None:
    history = FakeHistory("Greet", "World")
    transport = FakeTransport(history)
    processor = _processor(transport, Greet)
    await processor.process(_task(history))
    (completion,) = transport.posted("/workflow-tasks/complete")
    assert [c["command_type"] for c in completion["commands"]] == ["ScheduleActivityTask"]
    history.complete_task(completion["commands"])
    history.complete_activity("1", "Hi")
    history.schedule_task()
    await processor.process(_task(history))
    final = transport.posted("/workflow-tasks/complete")[-1]
    assert final["commands"][0]["attributes"]["result"] == '"Hi!"'
    assert not [c for c in transport.calls if c[1].endswith("/history")]  # never replayed
    assert processor.cached_run_ids == []  # evicted once the workflow closed


@contextlib.contextmanager
def _no_collector() -> Iterator[None]:
    """Only reference counting frees objects meanwhile: what is left is held in a cycle. (No
    gc.collect() first: it frees nothing these tests make, and took seconds in a whole run.)"""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_runs_objects_are_freed_without_the_collector() -> None:
    # A worker that ran 10,000 workflows kept them all for the collector's oldest
    # generation, which then walked them in one pause of a quarter of a second.
    history = FakeHistory("Greet", "World")
    transport = FakeTransport(history)
    processor = _processor(transport, Greet)
    with _no_collector():
        await processor.process(_task(history))
        instance = weakref.ref(processor._cache[history.run_id].instance)
        history.complete_task(transport.posted("/workflow-tasks/complete")[-1]["commands"])
        history.complete_activity("1", "Hi")
        history.schedule_task()
        await processor.process(_task(history))
        assert processor.cached_run_ids == []
        assert instance() is None


async def test_cache_miss_replays_full_paged_history() -> None:
    history = FakeHistory("Waiter")
    first = FakeTransport(history)
    await _processor(first, Waiter).process(_task(history))
    history.complete_task([])
    history.signal("add", "a")
    history.signal("finish")
    history.schedule_task()
    history.start_task()  # already beyond the task: must be cut off
    transport = FakeTransport(history, page=2)
    processor = _processor(transport, Waiter)  # a fresh worker: nothing cached
    task = _task(history)
    await processor.process(task)
    assert len([c for c in transport.calls if c[1].endswith("/history")]) > 1
    (completion,) = transport.posted("/workflow-tasks/complete")
    assert json.loads(completion["commands"][0]["attributes"]["result"]) == ["a"]


async def test_non_determinism_fails_task_and_evicts() -> None:
    history = FakeHistory("Greet", "World")
    history.start_task()
    history.complete_task(
        [
            {
                "command_type": "ScheduleActivityTask",
                "attributes": {"activity_id": "1", "activity_type": "compose_greeting", "task_queue": "tq", "input": "[]"},
            }
        ]
    )
    history.complete_activity("1", "x")
    history.schedule_task()
    history.first_event_id = 1
    transport = FakeTransport(history)
    processor = _processor(transport, GreetChanged)
    await processor.process(_task(history))
    (failure,) = transport.posted("/workflow-tasks/fail")
    assert failure["cause"] == "NonDeterminism"
    assert "compose_farewell" in failure["failure"]["message"]
    assert processor.cached_run_ids == []
    assert transport.posted("/workflow-tasks/complete") == []


async def test_workflow_code_error_fails_task_with_workflow_error() -> None:
    history = FakeHistory("Buggy")
    transport = FakeTransport(history)
    await _processor(transport, Buggy).process(_task(history))
    (failure,) = transport.posted("/workflow-tasks/fail")
    assert failure["cause"] == "WorkflowError"
    assert failure["failure"]["type"] == "KeyError"


async def test_queries_answered_from_cache_or_by_replay() -> None:
    history = FakeHistory("Waiter")
    transport = FakeTransport(history)
    processor = _processor(transport, Waiter)
    await processor.process(_task(history))
    history.complete_task([])
    history.signal("add", "a")
    history.schedule_task()
    await processor.process(_task(history))
    history.complete_task([])
    query = {"task_token": "q", "workflow_id": "wf-1", "run_id": history.run_id, "workflow_type": "", "events": []}
    await processor.process({**query, "query": {"query_id": "q1", "query_type": "count", "args": "[]"}})
    other = FakeTransport(history)
    await _processor(other, Waiter).process({**query, "query": {"query_id": "q2", "query_type": "count", "args": []}})
    await _processor(other, Waiter).process({**query, "query": {"query_id": "q3", "query_type": "nope", "args": []}})
    assert next(c for c in transport.calls if c[1] == "/queries/q1/respond")[2] == {"result": "1"}
    assert other.posted("/queries/q2/respond") == [{"result": "1"}]
    (error,) = other.posted("/queries/q3/respond")
    assert error["error"]["type"] == "QueryNotFound"


@activity.defn
async def shout(text: str) -> str:
    activity.heartbeat("half")
    await asyncio.sleep(0.01)  # heartbeats go out in the background while the activity runs
    return text.upper()


@activity.defn(name="describe")
def describe_sync(n: int) -> dict[str, Any]:
    info = activity.info()
    activity.heartbeat(n)
    return {"attempt": info.attempt, "type": info.activity_type, "details": list(info.heartbeat_details)}


class OutOfStock(Exception):
    pass


@activity.defn
async def refuse() -> None:
    raise ApplicationError("never", type="Refused", non_retryable=True)


@activity.defn
async def out_of_stock() -> None:
    raise OutOfStock("none left")


def _activity_task(activity_type: str, *args: Any, **extra: Any) -> dict[str, Any]:
    return {
        "task_token": f"a-{activity_type}",
        "workflow_id": "wf-1",
        "run_id": "run-1",
        "workflow_type": "Greet",
        "activity_id": "1",
        "activity_type": activity_type,
        "input": json.dumps(list(args)),
        "attempt": 2,
        "scheduled_event_id": 5,
        "schedule_to_close_timeout_ms": 0,
        "start_to_close_timeout_ms": 5000,
        "heartbeat_timeout_ms": 1000,
        "heartbeat_details": None,
        "scheduled_time": 1_700_000_000_000,
        **extra,
    }


async def test_activity_processor_outcomes() -> None:
    import concurrent.futures

    transport = FakeTransport()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        processor = ActivityTaskProcessor(
            transport,
            namespace="default",
            task_queue="tq",
            activities=[ActivityDefinition.of(f) for f in (shout, describe_sync, refuse, out_of_stock)],
            identity="test",
            executor=pool,
        )
        await processor.process(_activity_task("shout", "hey"))
        await processor.process(_activity_task("describe", 7, heartbeat_details="[3]"))
        await processor.process(_activity_task("refuse"))
        await processor.process(_activity_task("out_of_stock"))
        await processor.process(_activity_task("missing"))
        await eventually(lambda: len(transport.posted("/activity-tasks/heartbeat")) >= 2,
                         what="the background heartbeats out")
    completed = transport.posted("/activity-tasks/complete")
    assert completed[0]["result"] == '"HEY"'
    assert json.loads(completed[1]["result"]) == {"attempt": 2, "type": "describe", "details": [3]}
    failures = [f["failure"] for f in transport.posted("/activity-tasks/fail")]
    assert (failures[0]["type"], failures[0]["non_retryable"]) == ("Refused", True)
    assert (failures[1]["type"], failures[1]["message"]) == ("OutOfStock", "none left")
    assert failures[2]["type"] == "UnknownActivityType"
    beats = [b["details"] for b in transport.posted("/activity-tasks/heartbeat")]
    assert '["half"]' in beats and "[7]" in beats


async def test_an_activity_attempts_objects_are_freed_without_the_collector() -> None:
    contexts: list[weakref.ref[Any]] = []

    @activity.defn
    async def remember() -> str:
        contexts.append(weakref.ref(current_context()))
        return "done"

    transport = FakeTransport()
    processor = ActivityTaskProcessor(transport, namespace="default", task_queue="tq",
                                      activities=[ActivityDefinition.of(remember)], identity="test",
                                      executor=None)  # type: ignore[arg-type]
    with _no_collector():
        attempt = asyncio.get_running_loop().create_task(processor.process(_activity_task("remember")))
        await attempt
        del attempt
        assert transport.posted("/activity-tasks/complete")[0]["result"] == '"done"'
        await eventually(lambda: contexts[0]() is None, what="the attempt's context freed")  # once the loop lets go


@dataclasses.dataclass
class _Order:
    item: str


async def test_an_attempts_objects_are_let_go_before_its_completion_is_sent() -> None:
    # The completion's round trip (and a workflow task run ahead on it) would otherwise hold
    # them, and the collector walk them again and again under load.
    held: list[weakref.ref[Any]] = []
    alive_when_sent: list[bool] = []

    @activity.defn
    async def remember(order: _Order) -> str:
        held.extend([weakref.ref(current_context()), weakref.ref(order)])
        return "done"

    async def complete(task: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        alive_when_sent.extend(ref() is not None for ref in held)
        with pytest.raises(RuntimeError):
            current_context()  # the attempt is over: its context is left

    processor = ActivityTaskProcessor(FakeTransport(), namespace="default", task_queue="tq",
                                      activities=[ActivityDefinition.of(remember)], identity="test",
                                      executor=None, complete=complete)  # type: ignore[arg-type]
    with _no_collector():
        await asyncio.get_running_loop().create_task(processor.process(_activity_task("remember", {"item": "tea"})))
    assert alive_when_sent == [False, False]  # the context, the argument


async def test_activity_local_deadline_cancels_without_reporting() -> None:
    @activity.defn
    async def slow() -> None:
        await asyncio.sleep(10)

    transport = FakeTransport()
    processor = ActivityTaskProcessor(
        transport,
        namespace="default",
        task_queue="tq",
        activities=[ActivityDefinition.of(slow)],
        identity="test",
        executor=None,  # type: ignore[arg-type]
    )
    await processor.process(_activity_task("slow", start_to_close_timeout_ms=50))
    assert transport.posted("/activity-tasks/fail") == []
    assert transport.posted("/activity-tasks/complete") == []


class _CancellingTransport(FakeTransport):
    """Answers every heartbeat that the server wants the attempt stopped."""

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        answer = await super().call(method, path, body=body, params=params, timeout=timeout)
        return {"cancel_requested": True} if path.endswith("/heartbeat") else answer


async def test_a_heartbeat_answered_with_cancel_stops_the_attempt_and_reports_it_canceled() -> None:
    import concurrent.futures
    import time

    seen: list[str] = []

    @activity.defn
    async def waits_async() -> None:
        activity.heartbeat("working")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(f"async cancelled, cancel_requested={activity.is_cancel_requested()}")
            raise

    @activity.defn
    def waits_sync() -> None:
        activity.heartbeat("working")
        deadline = time.monotonic() + 5
        while not activity.is_cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.005)  # the heartbeat's answer comes on the worker's loop
        seen.append(f"sync cancel_requested={activity.is_cancel_requested()}")
        raise asyncio.CancelledError

    transport = _CancellingTransport()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        processor = ActivityTaskProcessor(transport, namespace="default", task_queue="tq",
                                          activities=[ActivityDefinition.of(waits_async),
                                                      ActivityDefinition.of(waits_sync)],
                                          identity="test", executor=pool)
        first = asyncio.create_task(processor.process(_activity_task("waits_async", task_token="a1")))
        try:
            # Well before its 10 s sleep is over: the heartbeat's answer cancelled it.
            await eventually(first.done, timeout=5, every=0.01, what="the async attempt stopped")
        finally:
            first.cancel()
        await asyncio.wait_for(processor.process(_activity_task("waits_sync", task_token="a2")), timeout=10)
    assert seen == ["async cancelled, cancel_requested=True", "sync cancel_requested=True"]
    assert [b["task_token"] for b in transport.posted("/activity-tasks/cancel")] == ["a1", "a2"]
    assert transport.posted("/activity-tasks/fail") == [] and transport.posted("/activity-tasks/complete") == []


async def _worker_runs_one_task() -> FakeTransport:
    """A worker with one poller is handed one Greet task; return its transport once answered."""
    history = FakeHistory("Greet", "World")
    transport = FakeTransport(history)
    transport.polls.append([_task(history)])
    client = Client(transport, namespace="default", identity="test")
    async with Worker(client, task_queue="tq", workflows=[Greet], workflow_pollers=1, poll_wait_seconds=1):
        await eventually(lambda: transport.posted("/workflow-tasks/complete"), every=0.01, what="the task completed")
    return transport


async def test_worker_polls_and_completes() -> None:
    transport = await _worker_runs_one_task()
    (completion,) = transport.posted("/workflow-tasks/complete")
    assert completion["commands"][0]["attributes"]["activity_type"] == "compose_greeting"
    poll = transport.posted("/workflow-tasks/poll")[0]
    # The first poll asks for the adaptive floor (kadence/_worker/adaptive.py), not the ceiling.
    assert poll["max_tasks"] == 10 and poll["identity"] == "test"


async def test_a_short_poll_answer_sends_the_next_poll_before_its_task_runs() -> None:
    # The server takes the poll while the worker runs the task, not right after the task's
    # answer, when it is taking that answer to the broker and the shard.
    transport = await _worker_runs_one_task()
    paths = [path.rsplit("/", 1)[-1] for method, path, _ in transport.calls if method == "POST"]
    assert paths[:3] == ["poll", "poll", "complete"]


async def test_a_full_poll_answer_sends_the_next_poll_before_its_tasks_run() -> None:
    # An answer with as many tasks as were asked for means more are waiting: they are
    # handed out (their workflow.now() stamped) while the worker runs this answer's tasks.
    transport = FakeTransport()
    for n in (1, 2):
        history = FakeHistory("Greet", "World", run_id=f"run-{n}")
        transport.polls.append([{**_task(history), "workflow_id": f"wf-{n}"}])
    client = Client(transport, namespace="default", identity="test")
    async with Worker(client, task_queue="tq", workflows=[Greet], workflow_pollers=1, max_tasks_per_poll=1,
                      poll_wait_seconds=1):
        await eventually(lambda: len(transport.posted("/workflow-tasks/complete")) == 2, every=0.01,
                         what="both tasks completed")
    paths = [path.rsplit("/", 1)[-1] for method, path, _ in transport.calls if method == "POST"]
    assert paths[:3] == ["poll", "poll", "complete"]
    assert len(transport.posted("/workflow-tasks/complete")) == 2


async def test_a_poller_cancelled_with_tasks_held_gives_their_slots_back() -> None:
    slots = Slots(2)
    ran: list[Mapping[str, Any]] = []
    polled = asyncio.Event()

    class OnePollThenHang:
        polls = 0

        async def call(self, method: str, path: str, **_: Any) -> dict[str, Any]:
            self.polls += 1
            if self.polls == 1:
                return {"tasks": [{"task_token": "t1"}]}
            polled.set()
            await asyncio.Event().wait()  # the second poll waits until cancelled
            return {}

    async def process(task: Mapping[str, Any]) -> None:
        ran.append(task)

    poller = Poller(OnePollThenHang(), "/workflow-tasks/poll", process=process, slots=slots,  # type: ignore[arg-type]
                    identity="test", max_tasks=1, wait_seconds=1)
    running = asyncio.create_task(poller.run())
    await asyncio.wait_for(polled.wait(), 5)
    # the held task runs once the next poll is out
    await eventually(lambda: [t["task_token"] for t in ran] == ["t1"], what="the held task ran")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert slots.free == 2


def test_worker_rejects_bad_registration() -> None:
    client = Client(FakeTransport(), namespace="default")
    with pytest.raises(ValueError, match="at least one workflow or activity"):
        Worker(client, task_queue="tq")
    with pytest.raises(TypeError, match="not a workflow"):
        Worker(client, task_queue="tq", workflows=[int])
    with pytest.raises(ValueError, match="more than one workflow registered under the name"):
        Worker(client, task_queue="tq", workflows=[Greet, GreetChanged])



class ActivityBacklog:
    """A task queue with more activity tasks than any poll asks for; polls of other kinds wait."""

    def __init__(self) -> None:
        self.handed = 0

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        if not path.endswith("/activity-tasks/poll"):
            await asyncio.Event().wait()
        assert body is not None
        await asyncio.sleep(0.001)
        tasks = []
        for _ in range(int(body["max_tasks"])):
            self.handed += 1
            tasks.append(_activity_task("hold", self.handed, task_token=f"a-{self.handed}",
                                        heartbeat_timeout_ms=0))
        return {"tasks": tasks}

    async def close(self) -> None:
        pass


async def _most_activities_at_once(hold: Any, running: Callable[[], int], release: Callable[[], None]) -> int:
    """The most activities a worker at its defaults runs at once from a backlog, watched for
    1.5 s; ``hold`` returns once ``release`` is called."""
    client = Client(ActivityBacklog(), namespace="default", identity="test")
    most = 0
    async with Worker(client, task_queue="tq", activities=[hold], graceful_shutdown_timeout=1):
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.5
        while loop.time() < end:
            most = max(most, running())
            await asyncio.sleep(0.01)
        release()
    return most


async def test_a_worker_of_async_activities_runs_up_to_a_thousand_at_once_from_a_backlog() -> None:
    # Each activity holds its slot through its completion's round trip: a ceiling of 100
    # capped a backlog at 100 per round trip although a waiting coroutine costs nothing.
    running = 0
    forever = asyncio.Event()

    @activity.defn(name="hold")
    async def hold(token: int) -> None:
        nonlocal running
        running += 1
        try:
            await forever.wait()
        finally:
            running -= 1

    most = await _most_activities_at_once(hold, lambda: running, forever.set)
    assert most == 1_000


async def test_a_worker_with_a_plain_function_activity_runs_no_more_than_its_threads() -> None:
    # A plain function runs on a thread of the worker's pool (100): a slot beyond them would
    # hold a task that waits for a thread.
    release = threading.Event()
    running = 0
    lock = threading.Lock()

    @activity.defn(name="hold")
    def hold(token: int) -> None:
        nonlocal running
        with lock:
            running += 1
        release.wait(30)

    try:
        most = await _most_activities_at_once(hold, lambda: running, release.set)
    finally:
        release.set()
    assert most == 100


class GatedTransport:
    """Answers each call when the test lets it; records what was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate = asyncio.Event()

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((path, body))
        await self.gate.wait()
        if path == "/task-answers":
            assert body is not None
            return {"results": [
                {"status": 400, "error": "InvalidArgument", "message": "bad token", "field": "task_token"}
                if a["body"]["task_token"] == "bad" else {"status": 200, "answer": {}} for a in body["answers"]]}
        return {}

    async def close(self) -> None:
        pass


async def test_answers_that_pile_up_leave_together_and_each_gets_its_own_outcome() -> None:
    from kadence._worker.answers import AnswerBatcher
    from kadence.exceptions import RPCError

    transport = GatedTransport()
    batcher = AnswerBatcher(transport, max_in_flight=1)
    first = asyncio.ensure_future(batcher.call("POST", "/workflow-tasks/complete", body={"task_token": "a"}))
    await eventually(lambda: transport.calls, every=0.01, what="the first answer sent")
    later = [asyncio.ensure_future(batcher.call("POST", path, body={"task_token": token}))
             for path, token in [("/activity-tasks/complete", "b"), ("/workflow-tasks/fail", "bad"),
                                 ("/activity-tasks/fail", "c")]]
    passthrough = asyncio.ensure_future(batcher.call("POST", "/activity-tasks/heartbeat", body={"task_token": "h"}))
    await eventually(lambda: len(transport.calls) >= 2, every=0.01, what="the heartbeat sent")
    # One answer alone went on its own path; the heartbeat is not an answer and went straight through.
    assert [path for path, _ in transport.calls] == ["/workflow-tasks/complete", "/activity-tasks/heartbeat"]
    transport.gate.set()
    assert await first == {} and await passthrough == {}
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert outcomes[0] == {} and outcomes[2] == {}
    assert isinstance(outcomes[1], RPCError) and outcomes[1].field == "task_token"
    batch = [body for path, body in transport.calls if path == "/task-answers"]
    assert len(batch) == 1
    assert [(a["operation"], a["body"]["task_token"]) for a in batch[0]["answers"]] == [
        ("complete_activity_task", "b"), ("fail_workflow_task", "bad"), ("fail_activity_task", "c")]
