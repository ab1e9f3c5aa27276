"""A call the SDK retries on its own gets, when its first try was taken but the answer lost,
the first try's answer: never a spurious error, never a second effect (docs/sdk.md, "Retried
calls"). A proxy between the client and the real frontend (losing_proxy.py) forwards the
first try and drops the connection before its answer; the client retries.

Async completions: their attempt is over when the retry comes, so the frontend compares the
retry with how the attempt ended: the same answer is ok, another is still refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from kadence import ActivityNotFoundError, Client, RetryPolicy, Worker, workflow
from kadence._http import HttpTransport
from kadence.exceptions import ActivityError, ApplicationError, AsyncActivityCancelledError, RPCError
from services.cluster import Cluster
from tests.e2e.losing_proxy import LosingProxy, losing_proxy
from tests.helpers import eventually

# The activity that leaves its attempt open, and the tokens it was handed, by workflow id.
from .test_async_activity_completion import ACTIVITY_IDS, _tokens, outside

pytestmark = pytest.mark.timeout(120)
QUEUE = "q-lost-answers"


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[tuple[LosingProxy, Client]]:
    """The proxy, and a client that goes through it."""
    async with losing_proxy(str(cluster.url)) as (losing, url), Client(HttpTransport(url, "default")) as client:
        yield losing, client


@workflow.defn
class Outside:
    @workflow.run
    async def run(self, case: str) -> str:
        call = workflow.execute_activity(
            outside, case, start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2) if case == "cancel" else None,
            retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=100)),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
        if case == "cancel":
            task = asyncio.ensure_future(call)
            await workflow.sleep(0.3)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
        try:
            return str(await call)
        except ActivityError as err:
            return f"{type(err.cause).__name__}: {err.cause}"


async def _events(client: Client, wid: str) -> list[str]:
    return [e["event_type"] for e in await client.get_workflow_handle(wid).history()]


async def test_an_async_completion_whose_answer_was_lost_is_answered_ok_on_its_retry(
        client: Client, proxy: tuple[LosingProxy, Client]) -> None:
    losing, through = proxy
    async with Worker(client, task_queue=QUEUE, workflows=[Outside], activities=[outside]):
        wid = f"lost-complete-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(Outside.run, "complete", id=wid, task_queue=QUEUE)
        [token] = await _tokens(wid, 1)
        losing.lose("POST", "/activity-tasks/complete")
        await through.get_async_activity_handle(task_token=token).complete("done")
        assert len(losing.calls("POST", "/activity-tasks/complete")) == 2
        assert await client.get_workflow_handle(wid).result(timeout=30) == "done"
        with pytest.raises(ActivityNotFoundError):  # another completion, late: refused as before
            await client.get_async_activity_handle(task_token=token).complete("other")
        with pytest.raises(ActivityNotFoundError):  # the same result, as a failure: another answer
            await client.get_async_activity_handle(task_token=token).fail(ApplicationError("done"))
    assert (await _events(client, wid)).count("ActivityTaskCompleted") == 1


async def test_a_failure_whose_answer_was_lost_is_answered_ok_retried_or_final(
        client: Client, proxy: tuple[LosingProxy, Client]) -> None:
    losing, through = proxy
    async with Worker(client, task_queue=QUEUE, workflows=[Outside], activities=[outside]):
        wid = f"lost-fail-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(Outside.run, "fail", id=wid, task_queue=QUEUE)
        by_ids = through.get_async_activity_handle(workflow_id=wid, activity_id=(await _ids(wid)))
        losing.lose("POST", "/activity-tasks/fail")
        await by_ids.fail(ApplicationError("boom 1", type="Boom"))  # retried by the policy: no event
        first, second = await _tokens(wid, 2)
        sent = [c["task_token"] for c in losing.calls("POST", "/activity-tasks/fail")]
        assert len(sent) == 2 and sent[0] == sent[1]  # by ids: the token is asked once per call
        with pytest.raises(ActivityNotFoundError):  # another failure of that attempt: refused
            await client.get_async_activity_handle(task_token=first).fail(ApplicationError("boom 9", type="Boom"))
        losing.lose("POST", "/activity-tasks/fail")
        await through.get_async_activity_handle(task_token=second).fail(ApplicationError("boom 2", type="Boom"))
        assert await client.get_workflow_handle(wid).result(timeout=30) == "ApplicationError: boom 2"
    assert (await _events(client, wid)).count("ActivityTaskFailed") == 1


async def _ids(wid: str) -> str:
    await _tokens(wid, 1)
    return ACTIVITY_IDS[wid]


async def test_a_reported_cancellation_whose_answer_was_lost_is_answered_ok(
        client: Client, proxy: tuple[LosingProxy, Client]) -> None:
    losing, through = proxy
    async with Worker(client, task_queue=QUEUE, workflows=[Outside], activities=[outside]):
        wid = f"lost-cancel-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(Outside.run, "cancel", id=wid, task_queue=QUEUE)
        [token] = await _tokens(wid, 1)
        handle = through.get_async_activity_handle(task_token=token)

        async def cancelled() -> bool:
            try:
                await handle.heartbeat()
            except AsyncActivityCancelledError:
                return True
            return False

        assert await eventually(cancelled, timeout=20, what="the heartbeat to see the cancel")
        losing.lose("POST", "/activity-tasks/cancel")
        await handle.report_cancellation("stopped")
        assert len(losing.calls("POST", "/activity-tasks/cancel")) == 2
        assert await client.get_workflow_handle(wid).result(timeout=30) == "cancelled"
        with pytest.raises(ActivityNotFoundError):
            await handle.report_cancellation("stopped differently")
    assert (await _events(client, wid)).count("ActivityTaskCanceled") == 1


async def test_admin_and_schedule_calls_whose_answers_were_lost_get_their_first_answer(
        client: Client, proxy: tuple[LosingProxy, Client]) -> None:
    losing, through = proxy
    name = f"lost-{uuid.uuid4().hex[:8]}"
    losing.lose("POST", "/api/v1/namespaces")
    created = await through.create_namespace(name, retention="2d", description="first")
    sent = losing.calls("POST", "/api/v1/namespaces")
    assert len(sent) == 2 and sent[0]["request_id"] == sent[1]["request_id"]  # 409 to its own first try before
    assert (created["name"], created["description"]) == (name, "first")
    with pytest.raises(RPCError) as refused:  # another create of the name: refused as before
        await through.create_namespace(name, retention="2d", description="first")
    assert (refused.value.status, refused.value.error_type) == (409, "NamespaceAlreadyExists")
    again = await through.create_namespace(name, retention="2d", request_id=sent[0]["request_id"])
    assert again["created_time"] == created["created_time"]  # the same id: the first create's answer

    losing.lose("PATCH", f"/api/v1/namespaces/{name}")
    updated = await through.update_namespace(name, description="second")
    assert updated["description"] == "second" and len(losing.calls("PATCH", f"/api/v1/namespaces/{name}")) == 2

    sid = f"lost-{uuid.uuid4().hex[:8]}"
    losing.lose("POST", "/schedules")
    schedule = await through.create_schedule(sid, Outside.run, "complete", task_queue="q-nobody", interval="1h",
                                             paused=True)
    assert schedule["schedule_id"] == sid and len(losing.calls("POST", "/schedules")) == 2
    with pytest.raises(RPCError) as refused:
        await through.create_schedule(sid, Outside.run, "complete", task_queue="q-nobody", interval="1h")
    assert (refused.value.status, refused.value.error_type) == (409, "ScheduleAlreadyExists")
    for verb, paused in (("unpause", False), ("pause", True)):
        losing.lose("POST", f"/schedules/{sid}/{verb}")
        answer = await getattr(through, f"{verb}_schedule")(sid, note=verb)
        assert (answer["paused"], answer["note"]) == (paused, verb)
        assert len(losing.calls("POST", f"/schedules/{sid}/{verb}")) == 2
    losing.lose("DELETE", f"/schedules/{sid}")
    await through.delete_schedule(sid)  # its retry finds nothing to delete: done
    assert len(losing.calls("DELETE", f"/schedules/{sid}")) == 2
    with pytest.raises(RPCError) as refused:
        await through.delete_schedule(sid)  # a new delete of a missing schedule: refused as before
    assert refused.value.status == 404


# ---- the calls that were already safe to repeat: one case each ---------------------------

@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.bumps = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return self.bumps

    @workflow.signal
    async def bump(self) -> None:
        self.bumps += 1

    @workflow.signal
    async def finish(self) -> None:
        self.done = True

    @workflow.update
    async def add(self) -> int:
        self.bumps += 1
        return self.bumps


COUNTING = "q-lost-counting"
Case = Callable[[Client, Client, str], Awaitable[None]]


async def _finished(client: Client, wid: str) -> int:
    handle = client.get_workflow_handle(wid)
    await handle.signal(Counter.finish)
    return int(await handle.result(timeout=30))


async def _signal(client: Client, through: Client, wid: str) -> None:
    await client.start_workflow(Counter.run, id=wid, task_queue=COUNTING)
    await through.get_workflow_handle(wid).signal(Counter.bump)
    assert await _finished(client, wid) == 1  # not 2: the repeat was not delivered again


async def _signal_with_start(client: Client, through: Client, wid: str) -> None:
    await through.signal_with_start_workflow(Counter.run, id=wid, task_queue=COUNTING, signal=Counter.bump)
    assert await _finished(client, wid) == 1
    assert (await _events(client, wid)).count("WorkflowExecutionStarted") == 1


async def _update(client: Client, through: Client, wid: str) -> None:
    await client.start_workflow(Counter.run, id=wid, task_queue=COUNTING)
    assert await through.get_workflow_handle(wid).execute_update(Counter.add, timeout=30) == 1
    assert await _finished(client, wid) == 1


async def _cancel(client: Client, through: Client, wid: str) -> None:
    await client.start_workflow(Counter.run, id=wid, task_queue=COUNTING)
    await through.get_workflow_handle(wid).cancel("enough")
    assert (await client.get_workflow_handle(wid).describe())["status"] in ("Running", "Canceled")
    events = await eventually(lambda: _closed_events(client, wid), timeout=30, what="the run to close")
    assert events is not None and events.count("WorkflowExecutionCancelRequested") == 1 and events[-1] == "WorkflowExecutionCanceled"


async def _closed_events(client: Client, wid: str) -> list[str] | None:
    events = await _events(client, wid)
    return events if events[-1] in ("WorkflowExecutionCanceled", "WorkflowExecutionCompleted") else None


async def _reset(client: Client, through: Client, wid: str) -> None:
    first = await client.start_workflow(Counter.run, id=wid, task_queue=COUNTING)
    await first.signal(Counter.bump)
    await eventually(lambda: _two_tasks(client, wid), timeout=30, what="the signal's task to complete")
    reset = await through.get_workflow_handle(wid, run_id=first.run_id).reset(reason="lost answer")
    assert (await client.get_workflow_handle(wid, run_id=first.run_id).describe())["new_run_id"] == reset.run_id
    assert (await client.get_workflow_handle(wid).describe())["run_id"] == reset.run_id  # no second reset
    assert await _finished(client, wid) == 1


async def _two_tasks(client: Client, wid: str) -> bool:
    return (await _events(client, wid)).count("WorkflowTaskCompleted") >= 2


async def _heartbeat(client: Client, through: Client, wid: str) -> None:
    await client.start_workflow(Outside.run, "heartbeat", id=wid, task_queue=QUEUE)
    [token] = await _tokens(wid, 1)
    await through.get_async_activity_handle(task_token=token).heartbeat("progress")
    await client.get_async_activity_handle(task_token=token).complete("beat")
    assert await client.get_workflow_handle(wid).result(timeout=30) == "beat"


async def _worker_answer(client: Client, through: Client, wid: str) -> None:
    # The worker itself talks through the proxy: its first workflow task answer is lost.
    async with Worker(through, task_queue="q-lost-worker", workflows=[Counter]):
        await client.start_workflow(Counter.run, id=wid, task_queue="q-lost-worker")
        await client.get_workflow_handle(wid).signal(Counter.bump)
        assert await _finished(client, wid) == 1
    assert (await _events(client, wid)).count("WorkflowExecutionCompleted") == 1


CASES: list[tuple[str, list[tuple[str, str]], Case]] = [
    ("signal", [("POST", "/signal")], _signal),
    ("signal-with-start", [("POST", "/signal-with-start")], _signal_with_start),
    ("update", [("POST", "/update")], _update),
    ("cancel", [("POST", "/cancel")], _cancel),
    ("reset", [("POST", "/reset")], _reset),
    ("activity heartbeat", [("POST", "/activity-tasks/heartbeat")], _heartbeat),
    # A worker sends its answers together (/task-answers) or one by one: the first of either is lost.
    ("workflow task answer", [("POST", "/task-answers"), ("POST", "/workflow-tasks/complete")], _worker_answer),
]


@pytest.mark.parametrize(("losing_what", "case"), [(lose, case) for _, lose, case in CASES],
                         ids=[name for name, _, _ in CASES])
async def test_a_call_already_safe_to_repeat_gets_its_first_answer_once(
        client: Client, proxy: tuple[LosingProxy, Client], losing_what: list[tuple[str, str]], case: Case) -> None:
    losing, through = proxy
    async with Worker(client, task_queue=COUNTING, workflows=[Counter]), \
            Worker(client, task_queue=QUEUE, workflows=[Outside], activities=[outside]):
        for method, suffix in losing_what:
            losing.lose(method, suffix)
        await case(client, through, f"lost-{case.__name__.strip('_')}-{uuid.uuid4().hex[:8]}")
    assert any(losing.losing[key] == 0 for key in losing_what)  # an answer was lost
    assert sum(len(losing.calls(m, s)) for m, s in losing_what) >= 2  # the lost try and its retry
