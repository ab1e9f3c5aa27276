"""The programming model's guarantees while processes die and messages repeat, as a Temporal
user with a fault script would try them: an update's caller while its worker and frontend go
away, cancel racing completion, a repeated signal-with-start, continue-as-new under a stream
of signals. Real broker and PostgreSQL (the Cluster fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

import pytest

from kadence import Client, ResetPoint, Worker, activity, workflow
from kadence.client import WorkflowHandle, WorkflowUpdateHandle
from kadence.exceptions import RPCError, WorkflowFailureError, WorkflowNotFoundError
from kadence.workflow import ParentClosePolicy
from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from tests.helpers import eventually

from .conftest import _settings

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster), but for
    the one that stops a frontend, which builds its own."""
    return module_cluster


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@workflow.defn
class Held:
    """An update whose handler waits for a signal that never comes: accepted, never completed."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def hold(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "done"

    @workflow.signal
    def release(self) -> None:
        self.go = True


async def test_an_update_wait_ends_at_its_timeout_when_the_worker_and_the_frontend_are_gone(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    """The update is accepted, its worker goes away before completing it, and the frontend
    stops: the caller's wait with a timeout ends with TimeoutError at that timeout, not after
    the client's 30 s of retrying an unreachable frontend."""
    wid, queue = _id("held-update"), _id("q-held")
    async with Cluster(_settings(broker, fresh_dsn)) as own, \
            await Client.connect(own.url, namespace="default") as client:
        async with Worker(client, task_queue=queue, workflows=[Held]):
            handle = await client.start_workflow(Held.run, id=wid, task_queue=queue)
            update = await handle.start_update(Held.hold, id="u-1", wait_for_stage="accepted", timeout=20)
        await own.frontend.stop()
        await _waits_end_by_their_timeout(handle, update)


async def _waits_end_by_their_timeout(handle: WorkflowHandle, update: WorkflowUpdateHandle) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(update.result(timeout=1), 10)
    assert loop.time() - started < 4, f"a wait with a 1 s timeout ran {loop.time() - started:.1f} s"
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handle.execute_update(Held.hold, id="u-2", timeout=1), 10)
    assert loop.time() - started < 4, f"a wait with a 1 s timeout ran {loop.time() - started:.1f} s"


@workflow.defn
class Finisher:
    """Completes when told to; a cancel while it waits closes it Canceled."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.done)
        return "completed"

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def test_cancel_racing_completion_closes_each_run_once_and_the_caller_agrees(client: Client) -> None:
    queue = _id("q-race")
    ids = [_id(f"race-{i}") for i in range(8)]
    closes = {"WorkflowExecutionCompleted", "WorkflowExecutionCanceled", "WorkflowExecutionFailed",
              "WorkflowExecutionTerminated"}
    async with Worker(client, task_queue=queue, workflows=[Finisher]):
        handles = [await client.start_workflow(Finisher.run, id=wid, task_queue=queue) for wid in ids]
        await eventually(lambda: _all_waiting(handles), timeout=30, what="every run waiting")

        async def cancel(h: object) -> None:
            try:
                await h.cancel()  # type: ignore[attr-defined]
            except WorkflowNotFoundError:
                pass  # the completion won

        # Half signal first, half cancel first: both kinds of arrival in one task, and apart.
        await asyncio.gather(*(step for i, h in enumerate(handles)
                               for step in ((h.signal(Finisher.finish), cancel(h)) if i % 2
                                            else (cancel(h), h.signal(Finisher.finish)))),
                             return_exceptions=True)
        outcomes = []
        for h in handles:
            try:
                outcomes.append(await h.result(timeout=30))
            except WorkflowFailureError as err:
                outcomes.append(err.status)
    for h, outcome in zip(handles, outcomes, strict=True):
        kinds = [e["event_type"] for e in await h.history()]
        closed = [k for k in kinds if k in closes]
        assert len(closed) == 1 and kinds[-1] == closed[0], (h.workflow_id, kinds)
        expected = {"WorkflowExecutionCompleted": "completed", "WorkflowExecutionCanceled": "Canceled"}
        assert outcome == expected.get(closed[0]), (h.workflow_id, outcome, kinds)
        described = await h.describe()
        assert described["status"] == closed[0].removeprefix("WorkflowExecution"), (described, kinds)


async def _all_waiting(handles: list) -> bool:  # type: ignore[type-arg]
    for h in handles:
        kinds = [e["event_type"] for e in await h.history()]
        if kinds[-1] != "WorkflowTaskCompleted":
            return False
    return True


@workflow.defn
class Counter:
    """Counts its signals."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: "stop" in self.seen)
        return self.seen

    @workflow.signal
    def note(self, what: str) -> None:
        self.seen.append(what)


async def test_a_signal_with_start_retried_with_its_request_id_through_another_frontend_acts_once(
        cluster: Cluster) -> None:
    """The first signal-with-start goes through a frontend that then stops (its caller saw no
    answer, say); the retry, same request id, goes through another: one run, one signal."""
    wid, queue, request_id = _id("sws"), _id("q-sws"), f"req-{uuid.uuid4().hex}"
    assert cluster.pool is not None
    first_frontend = FrontendService(cluster.settings, pool=cluster.pool)  # commands through the broker
    await first_frontend.start()
    try:
        async with await Client.connect(first_frontend.url, namespace="default") as first:
            h1 = await first.signal_with_start_workflow(Counter.run, id=wid, task_queue=queue, signal=Counter.note,
                                                        signal_args=["a"], request_id=request_id)
    finally:
        await first_frontend.stop()
    async with await Client.connect(cluster.url, namespace="default") as again, \
            Worker(again, task_queue=queue, workflows=[Counter]):
        h2 = await again.signal_with_start_workflow(Counter.run, id=wid, task_queue=queue, signal=Counter.note,
                                                    signal_args=["a"], request_id=request_id)
        assert h2.run_id == h1.run_id
        await again.get_workflow_handle(wid).signal(Counter.note, "stop")
        assert await again.get_workflow_handle(wid).result(timeout=30) == ["a", "stop"]
        kinds = [e["event_type"] for e in await again.get_workflow_handle(wid).history()]
    assert kinds.count("WorkflowExecutionStarted") == 1 and kinds.count("WorkflowExecutionSignaled") == 2, kinds


@workflow.defn
class Batches:
    """Continues as new after every three signals, carrying what it received."""

    def __init__(self) -> None:
        self.new: list[str] = []

    @workflow.run
    async def run(self, got: list[str], total: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.new) >= 3 or len(got) + len(self.new) >= total)
        if len(got) + len(self.new) >= total:
            return got + self.new
        workflow.continue_as_new(got + self.new, total)

    @workflow.signal
    def add(self, what: str) -> None:
        self.new.append(what)


async def test_signals_streaming_in_across_continue_as_new_each_reach_one_run_once(client: Client) -> None:
    wid, queue = _id("batches"), _id("q-batches")
    sent = [f"s{i}" for i in range(24)]
    async with Worker(client, task_queue=queue, workflows=[Batches]):
        handle = await client.start_workflow(Batches.run, [], len(sent), id=wid, task_queue=queue)
        target = client.get_workflow_handle(wid)  # the current run at each signal
        for i in range(0, len(sent), 4):
            await asyncio.gather(*(target.signal(Batches.add, s) for s in sent[i:i + 4]))
        got = await handle.result(timeout=60)
    assert sorted(got) == sorted(sent), (len(got), sorted(got))


async def test_an_update_whose_worker_died_runs_once_when_asked_again_through_another_frontend(
        cluster: Cluster, client: Client) -> None:
    """Accepted by a worker that then goes away with the handler unfinished; the same update id
    is asked again through another frontend (the first one gone): it is not run a second time,
    and the new worker, replaying, finishes the one accepted; both callers get its one result."""
    wid, queue = _id("update-twice"), _id("q-update-twice")
    assert cluster.pool is not None
    other = FrontendService(cluster.settings, pool=cluster.pool)
    await other.start()
    try:
        async with await Client.connect(other.url, namespace="default") as first:
            async with Worker(first, task_queue=queue, workflows=[Held]):
                handle = await first.start_workflow(Held.run, id=wid, task_queue=queue)
                await handle.start_update(Held.hold, id="u-once", wait_for_stage="accepted", timeout=20)
    finally:
        await other.stop()
    async with Worker(client, task_queue=queue, workflows=[Held]):
        again = client.get_workflow_handle(wid)
        waiting = asyncio.ensure_future(again.execute_update(Held.hold, id="u-once", timeout=30))
        by_id = asyncio.ensure_future(again.get_update_handle("u-once").result(timeout=30))
        await again.signal(Held.release)
        assert await waiting == "done" and await by_id == "done"
        kinds = [e["event_type"] for e in await again.history()]
    assert kinds.count("WorkflowExecutionUpdateAccepted") == 1, kinds
    assert kinds.count("WorkflowExecutionUpdateCompleted") == 1, kinds


TOKENS: list[str] = []
NEW_ANSWER = asyncio.Event()


@activity.defn(name="fetch")
async def fetch(key: str) -> str:
    """The old run's call is left open (the test answers it by its token); the new run's waits
    until that answer has been sent."""
    TOKENS.append(activity.info().task_token)
    if len(TOKENS) == 1:
        activity.raise_complete_async()
    await NEW_ANSWER.wait()
    return "new run's answer"


@workflow.defn
class Fetcher:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(fetch, key, start_to_close_timeout=timedelta(seconds=30))


async def test_a_reset_run_refuses_the_answer_of_an_activity_of_the_run_it_replaced(client: Client) -> None:
    """The run is reset while its activity runs; the worker answers the old run's attempt while
    the new run's attempt of the same activity is running: the answer is refused, not applied
    to the new run (it would complete the new run's activity with the old attempt's result)."""
    wid, queue = _id("reset-answers"), _id("q-reset-answers")
    TOKENS.clear()
    NEW_ANSWER.clear()
    async with Worker(client, task_queue=queue, workflows=[Fetcher], activities=[fetch]):
        old = await client.start_workflow(Fetcher.run, "k", id=wid, task_queue=queue)
        await eventually(lambda: len(TOKENS) == 1, timeout=30, what="the old run's activity running")
        new = await old.reset(ResetPoint.FIRST, reason="redo")
        await eventually(lambda: len(TOKENS) == 2, timeout=30, what="the new run's activity running")
        with contextlib.suppress(RPCError):  # refused outright, or taken and dropped by history
            await client.get_async_activity_handle(task_token=TOKENS[0]).complete("old run's answer")
        NEW_ANSWER.set()
        assert await new.result(timeout=30) == "new run's answer"
    completed = [e["attributes"]["result"] for e in await new.history() if e["event_type"] == "ActivityTaskCompleted"]
    assert completed == ['"new run\'s answer"'], completed
    old_kinds = [e["event_type"] for e in await old.history()]
    assert "ActivityTaskCompleted" not in old_kinds and old_kinds[-1] == "WorkflowExecutionTerminated", old_kinds


CODE = {"version": 1}
V2_RUNS: list[int] = []


@activity.defn(name="step")
async def step(value: str) -> str:
    return value


@workflow.defn
class Upgraded:
    """Version 1 runs an activity then waits for a signal; version 2 (the bad deploy) sleeps
    where version 1 ran the activity: replaying version 1's history, it is non-deterministic."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        if CODE["version"] == 1:
            first = await workflow.execute_activity(step, "v1", start_to_close_timeout=timedelta(seconds=10))
        else:
            V2_RUNS.append(workflow.info().workflow_task_attempt)
            await workflow.sleep(timedelta(milliseconds=10))
            first = "v2"
        await workflow.wait_condition(lambda: self.go)
        return first

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


async def test_a_non_deterministic_deploy_fails_its_task_visibly_backs_off_and_leaves_the_run_whole(
        client: Client) -> None:
    wid, queue = _id("upgraded"), _id("q-upgraded")
    CODE["version"] = 1
    V2_RUNS.clear()
    try:
        async with Worker(client, task_queue=queue, workflows=[Upgraded], activities=[step]):
            handle = await client.start_workflow(Upgraded.run, id=wid, task_queue=queue)
            await eventually(lambda: _waits_after_step(handle), timeout=30, what="the step done, the wait begun")
        CODE["version"] = 2
        async with Worker(client, task_queue=queue, workflows=[Upgraded], activities=[step]):
            await handle.signal(Upgraded.proceed)

            async def failing() -> dict[str, Any] | None:
                task = (await handle.describe())["workflow_task"]
                return task if task is not None and task["attempt"] >= 3 else None

            task = await eventually(failing, timeout=30, what="the task's third attempt")
            assert "nondetermin" in str(task["last_failure"]).lower().replace("-", "").replace(" ", ""), task
            # Each attempt ran the code once (the first two at once, then 1 s, 2 s... apart).
            assert len(V2_RUNS) <= int(task["attempt"]) + 1, (V2_RUNS, task)
        CODE["version"] = 1  # rolled back
        async with Worker(client, task_queue=queue, workflows=[Upgraded], activities=[step]):
            assert await handle.result(timeout=30) == "v1"
    finally:
        CODE["version"] = 1
    kinds = [e["event_type"] for e in await handle.history()]
    assert kinds.count("WorkflowTaskFailed") == 1 and kinds.count("ActivityTaskCompleted") == 1, kinds
    assert kinds[-1] == "WorkflowExecutionCompleted" and "TimerStarted" not in kinds, kinds


async def _waits_after_step(handle: WorkflowHandle) -> bool:
    kinds = [e["event_type"] for e in await handle.history()]
    return "ActivityTaskCompleted" in kinds and kinds[-1] == "WorkflowTaskCompleted"


@workflow.defn
class Cutter:
    """Starts a Finisher child and cancels the wait for it when told to."""

    def __init__(self) -> None:
        self.cut = False

    @workflow.run
    async def run(self, child_id: str) -> str:
        child = await workflow.start_child_workflow(Finisher.run, id=child_id)
        waiting = asyncio.ensure_future(child.result())
        await workflow.wait_condition(lambda: self.cut or waiting.done())
        waiting.cancel()
        try:
            return f"child {await waiting}"
        except asyncio.CancelledError:
            return "wait canceled"

    @workflow.signal
    def cut_off(self) -> None:
        self.cut = True


async def test_a_parent_canceling_its_child_racing_the_childs_completion_sees_one_outcome(client: Client) -> None:
    """The parent cancels its child while the child is told to complete: the child closes
    once, and the parent's record of the child's close is the child's own."""
    queue = _id("q-cutter")
    pairs = [(_id(f"cutter-{i}"), _id(f"cut-{i}")) for i in range(6)]
    async with Worker(client, task_queue=queue, workflows=[Cutter, Finisher]):
        parents = [await client.start_workflow(Cutter.run, child, id=parent, task_queue=queue)
                   for parent, child in pairs]

        async def children_started() -> bool:
            described = [await p.describe() for p in parents]
            return all([c["state"] for c in d["pending_children"]] == ["Started"] for d in described)

        await eventually(children_started, timeout=30, what="every child started")
        await asyncio.gather(*(step for (_, child), parent in zip(pairs, parents, strict=True)
                               for step in (client.get_workflow_handle(child).signal(Finisher.finish),
                                            parent.signal(Cutter.cut_off))))
        results = [await p.result(timeout=30) for p in parents]
    for (_, child), parent, result in zip(pairs, parents, results, strict=True):
        child_kinds = [e["event_type"] for e in await client.get_workflow_handle(child).history()]
        child_closes = [k for k in child_kinds if k in ("WorkflowExecutionCompleted", "WorkflowExecutionCanceled")]
        assert len(child_closes) == 1 and child_kinds[-1] == child_closes[0], child_kinds
        parent_kinds = [e["event_type"] for e in await parent.history()]
        seen = [k for k in parent_kinds if k in ("ChildWorkflowExecutionCompleted", "ChildWorkflowExecutionCanceled")]
        assert seen == [child_closes[0].replace("WorkflowExecution", "ChildWorkflowExecution")], (seen, child_kinds)
        assert result in ("child completed", "wait canceled"), result
        if result == "child completed":
            assert seen == ["ChildWorkflowExecutionCompleted"]


@workflow.defn
class Quick:
    @workflow.run
    async def run(self) -> str:
        return "done"


async def test_a_start_retried_with_its_request_id_after_the_run_closed_starts_nothing(client: Client) -> None:
    """The caller's first start was taken and the run completed before the retry arrived (its
    answer lost): the retry, same request id, answers that run instead of starting another;
    so does a signal-with-start retried with its request id."""
    queue = _id("q-quick")
    async with Worker(client, task_queue=queue, workflows=[Quick, Counter]):
        wid, request_id = _id("quick"), f"req-{uuid.uuid4().hex}"
        first = await client.start_workflow(Quick.run, id=wid, task_queue=queue, request_id=request_id)
        assert await first.result(timeout=30) == "done"
        again = await client.start_workflow(Quick.run, id=wid, task_queue=queue, request_id=request_id)
        assert again.run_id == first.run_id
        sws_id, sws_request = _id("sws-closed"), f"req-{uuid.uuid4().hex}"
        h1 = await client.signal_with_start_workflow(Counter.run, id=sws_id, task_queue=queue, signal=Counter.note,
                                                     signal_args=["stop"], request_id=sws_request)
        assert await h1.result(timeout=30) == ["stop"]
        h2 = await client.signal_with_start_workflow(Counter.run, id=sws_id, task_queue=queue, signal=Counter.note,
                                                     signal_args=["stop"], request_id=sws_request)
        assert h2.run_id == h1.run_id
    assert (await client.get_workflow_handle(wid).describe())["run_id"] == first.run_id
    assert (await client.get_workflow_handle(sws_id).describe())["run_id"] == h1.run_id


async def test_a_signal_retried_with_its_request_id_after_continue_as_new_is_not_delivered_again(
        client: Client) -> None:
    """The signal that made the run continue as new is sent again with its request id (its
    answer was lost): the retry reaches the new run's workflow id, and must not be delivered there."""
    wid, queue = _id("batches-retry"), _id("q-batches-retry")
    async with Worker(client, task_queue=queue, workflows=[Batches]):
        handle = await client.start_workflow(Batches.run, [], 4, id=wid, task_queue=queue)
        target = client.get_workflow_handle(wid)
        for i in range(3):
            await target.signal(Batches.add, f"s{i}", request_id=f"{wid}-s{i}")

        async def continued() -> bool:
            return bool((await target.describe())["run_id"] != handle.run_id)

        await eventually(continued, timeout=30, what="the continue-as-new")
        await target.signal(Batches.add, "s2", request_id=f"{wid}-s2")  # the retry
        await target.signal(Batches.add, "s3", request_id=f"{wid}-s3")
        assert await handle.result(timeout=30) == ["s0", "s1", "s2", "s3"]


async def test_copies_of_a_call_sent_at_once_with_one_request_id_act_once(client: Client) -> None:
    """A retry that overtakes its first copy (the client's wait ran out while the first was
    still on its way): copies of a start, a signal-with-start and a signal with one request id,
    sent at the same moment, act once; every copy answers the same run."""
    queue = _id("q-copies")
    async with Worker(client, task_queue=queue, workflows=[Counter]):
        wid, request_id = _id("copies"), f"req-{uuid.uuid4().hex}"
        starts = await asyncio.gather(*(client.start_workflow(Counter.run, id=wid, task_queue=queue,
                                                              request_id=request_id) for _ in range(4)))
        assert len({h.run_id for h in starts}) == 1, [h.run_id for h in starts]
        target = client.get_workflow_handle(wid)
        await asyncio.gather(*(target.signal(Counter.note, "once", request_id=f"{wid}-once") for _ in range(4)))
        await target.signal(Counter.note, "stop")
        assert await target.result(timeout=30) == ["once", "stop"]
        sws_id, sws_request = _id("sws-copies"), f"req-{uuid.uuid4().hex}"
        handles = await asyncio.gather(*(client.signal_with_start_workflow(
            Counter.run, id=sws_id, task_queue=queue, signal=Counter.note, signal_args=["stop"],
            request_id=sws_request) for _ in range(4)))
        assert len({h.run_id for h in handles}) == 1, [h.run_id for h in handles]
        assert await handles[0].result(timeout=30) == ["stop"]
    kinds = [e["event_type"] for e in await client.get_workflow_handle(sws_id).history()]
    assert kinds.count("WorkflowExecutionSignaled") == 1, kinds


LOCAL_CALLS: list[str] = []
OLD_LOCAL, NEW_LOCAL = asyncio.Event(), asyncio.Event()


@activity.defn(name="held_local")
async def held_local() -> str:
    """A local activity: the workflow task that runs it stays in flight until it returns."""
    LOCAL_CALLS.append(activity.info().run_id)
    if len(LOCAL_CALLS) == 1:
        await OLD_LOCAL.wait()
        LOCAL_CALLS.append("old returned")
        return "old"
    await NEW_LOCAL.wait()
    return "new"


@workflow.defn
class Resettable:
    """A timer pending and an activity done when its workflow task runs a held local activity."""

    @workflow.run
    async def run(self) -> str:
        pending = asyncio.ensure_future(workflow.sleep(timedelta(seconds=60)))
        first = await workflow.execute_activity(step, "a", start_to_close_timeout=timedelta(seconds=10))
        last = await workflow.execute_local_activity(held_local, start_to_close_timeout=timedelta(seconds=20))
        pending.cancel()
        return f"{first} {last}"


async def test_a_reset_run_refuses_the_old_runs_workflow_task_answer(client: Client) -> None:
    """Reset while the old run's workflow task is still in the worker's hands (running a local
    activity), with a timer pending: that task's answer, sent while the new run's task is in
    flight, is refused; the new run completes with its own."""
    wid, queue = _id("reset-task"), _id("q-reset-task")
    LOCAL_CALLS.clear()
    OLD_LOCAL.clear()
    NEW_LOCAL.clear()
    try:
        async with Worker(client, task_queue=queue, workflows=[Resettable], activities=[step, held_local]):
            old = await client.start_workflow(Resettable.run, id=wid, task_queue=queue)
            await eventually(lambda: len(LOCAL_CALLS) == 1, timeout=30, what="the old run's task in flight")
            new = await old.reset(ResetPoint.FIRST, reason="redo")
            await eventually(lambda: len(LOCAL_CALLS) == 2, timeout=30, what="the new run's task in flight")
            OLD_LOCAL.set()  # the old task's answer goes out while the new run's task runs
            await eventually(lambda: "old returned" in LOCAL_CALLS, timeout=10, what="the old task's answer")
            NEW_LOCAL.set()
            assert await new.result(timeout=30) == "a new"
    finally:
        OLD_LOCAL.set()
        NEW_LOCAL.set()
    assert LOCAL_CALLS == [old.run_id, new.run_id, "old returned"]
    new_events = await new.history()
    kinds = [e["event_type"] for e in new_events]
    assert kinds.count("WorkflowExecutionCompleted") == 1 and kinds[-1] == "WorkflowExecutionCompleted", kinds
    old_kinds = [e["event_type"] for e in await old.history()]
    assert old_kinds[-1] == "WorkflowExecutionTerminated" and "WorkflowExecutionCompleted" not in old_kinds, old_kinds


@workflow.defn
class Lingerer:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn
class EagerParent:
    """Starts a Lingerer child under the policy it is given, then waits."""

    @workflow.run
    async def run(self, child_id: str, policy: str) -> None:
        await workflow.start_child_workflow(Lingerer.run, id=child_id, parent_close_policy=ParentClosePolicy(policy))
        await workflow.wait_condition(lambda: False)


@pytest.mark.parametrize("policy", [ParentClosePolicy.TERMINATE, ParentClosePolicy.REQUEST_CANCEL])
async def test_a_parent_closed_while_its_childs_start_is_in_flight_leaves_no_orphan(
        client: Client, policy: ParentClosePolicy) -> None:
    """Each parent is terminated at about the moment its child's start is initiated: whether
    the child started before or after the parent closed, it ends as the policy says."""
    queue = _id("q-eager")
    pairs = [(_id(f"eager-{i}"), _id(f"eager-kid-{i}")) for i in range(8)]
    async with Worker(client, task_queue=queue, workflows=[EagerParent, Lingerer]):
        parents = [await client.start_workflow(EagerParent.run, child, policy.value, id=parent,
                                               task_queue=queue) for parent, child in pairs]
        await asyncio.gather(*(p.terminate("racing the child's start") for p in parents))
        expected = "Terminated" if policy == ParentClosePolicy.TERMINATE else "Canceled"

        async def no_orphans() -> bool:
            for _, child in pairs:
                try:
                    status = (await client.get_workflow_handle(child).describe())["status"]
                except WorkflowNotFoundError:
                    continue  # never started: the parent closed first
                if status != expected:
                    raise AssertionError(f"child {child} is {status}")
            return True

        await eventually(no_orphans, timeout=30, every=0.2, what="every child closed as its parent's policy says")
