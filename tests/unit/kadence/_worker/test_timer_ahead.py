"""Timer run-ahead in the worker: a cached run's user timer wakes on this worker's event loop
at its fire time by the wall clock, the task it wakes runs here and goes to the frontend
under the last task's token; a run evicted, a new task for it or the worker stopping cancels
that; ``run_timers_ahead=False`` never arms one and never claims the grace. Runs due together
all resume before any of their tasks goes out (decision 0017)."""

from __future__ import annotations

import gc
import math
import time
from datetime import timedelta
from typing import Any

import pytest

from kadence import activity, workflow
from kadence._activity import ActivityDefinition
from kadence._worker.workflow_tasks import TIMER_AHEAD_LATE_MS, WorkflowTaskProcessor
from kadence._workflow import instance as instance_module
from kadence._workflow.definition import WorkflowDefinition
from kadence.common import RetryPolicy
from tests.helpers import eventually
from tests.unit._fake_history import FakeHistory
from tests.unit.kadence._worker.test_worker import FakeTransport, _task

pytestmark = pytest.mark.timeout(30)
NAP_S = 0.3


@workflow.defn
class ShortNap:
    @workflow.run
    async def run(self) -> float:
        await workflow.sleep(NAP_S)
        return workflow.now().timestamp()


@activity.defn
async def down() -> None:
    raise RuntimeError("down")


@workflow.defn
class RetriesLater:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity(down, start_to_close_timeout=timedelta(seconds=1),
                                              retry_policy=RetryPolicy(initial_interval=timedelta(hours=1)))


def _processor(transport: FakeTransport, *, run_timers_ahead: bool = True) -> WorkflowTaskProcessor:
    return WorkflowTaskProcessor(transport, namespace="default",
                                 workflows=[WorkflowDefinition.of(ShortNap), WorkflowDefinition.of(RetriesLater)],
                                 activities=[ActivityDefinition.of(down)], identity="test", run_timers_ahead=run_timers_ahead)


async def _first_task(processor: WorkflowTaskProcessor, transport: FakeTransport) -> tuple[dict[str, Any], int]:
    """Run the first task (it sleeps); the task and the StartTimer's requested time."""
    task = _task(FakeHistory("ShortNap"))
    await processor.process(task)
    completion = transport.posted("/workflow-tasks/complete")[-1]
    [timer] = completion["commands"]
    assert timer["command_type"] == "StartTimer"
    return task, int(timer["attributes"]["requested_time"])


async def test_the_timer_wakes_the_run_here_at_its_fire_time_and_the_task_goes_out() -> None:
    transport = FakeTransport()
    processor = _processor(transport)
    task, requested = await _first_task(processor, transport)
    assert transport.posted("/workflow-tasks/complete")[-1]["runs_timers_ahead"] is True
    [sent] = await eventually(lambda: transport.posted("/workflow-tasks/timer-ahead"), what="the timer's task")
    woke_ms = time.time() * 1000
    assert sent["task_token"] == task["task_token"] and sent["timer_id"] == "1" and sent["identity"] == "test"
    ahead = sent["workflow_task"]
    assert ahead["runs_timers_ahead"] is True and ahead["after_scheduled_event_id"] == task["scheduled_event_id"]
    # Never before NAP_S of wall time since the call, and workflow.now() in the task says so too.
    assert ahead["started_time"] >= requested + NAP_S * 1000 and woke_ms >= requested + NAP_S * 1000
    [complete] = ahead["commands"]
    assert complete["command_type"] == "CompleteWorkflowExecution"
    assert float(complete["attributes"]["result"]) * 1000 >= requested + NAP_S * 1000
    assert processor.cached_run_ids == []  # the run finished: it leaves the cache


async def test_an_evicted_run_or_a_stopped_worker_has_no_timer_armed() -> None:
    transport = FakeTransport()
    processor = _processor(transport)
    task, _ = await _first_task(processor, transport)
    assert task["run_id"] in processor._wakes
    processor._evict(task["run_id"])
    assert not processor._wakes and not processor._wakes._handles
    second = _processor(transport)
    task, _ = await _first_task(second, transport)
    [handle] = second._wakes._handles.values()
    second.close()
    assert handle.cancelled() and not second._wakes


async def test_a_worker_that_does_not_run_timers_ahead_arms_nothing_and_claims_no_grace() -> None:
    transport = FakeTransport()
    processor = _processor(transport, run_timers_ahead=False)
    await _first_task(processor, transport)
    assert "runs_timers_ahead" not in transport.posted("/workflow-tasks/complete")[-1]
    assert not processor._wakes


async def test_a_completion_that_starts_a_local_activitys_backoff_timer_claims_no_grace() -> None:
    transport = FakeTransport()
    processor = _processor(transport)
    await processor.process(_task(FakeHistory("RetriesLater")))
    completion = transport.posted("/workflow-tasks/complete")[-1]
    assert [c["attributes"].get("timer_id") for c in completion["commands"] if c["command_type"] == "StartTimer"] \
        == ["local_activity:1:1"]
    assert "runs_timers_ahead" not in completion


async def test_a_timer_already_too_late_here_is_left_to_history() -> None:
    transport = FakeTransport()
    processor = _processor(transport)
    task, _ = await _first_task(processor, transport)
    run_id = task["run_id"]
    processor._disarm(run_id)
    runner = processor._cache[run_id]
    late = int(time.time() * 1000) - TIMER_AHEAD_LATE_MS - 50  # its task would run this late
    await processor._run_timer_ahead(run_id, runner, "1", late)
    assert transport.posted("/workflow-tasks/timer-ahead") == []
    assert runner.next_timer() is not None and not runner.ahead  # nothing ran: history's task fits as usual
    await processor._run_timer_ahead(run_id, runner, "1", int(time.time() * 1000))
    assert len(transport.posted("/workflow-tasks/timer-ahead")) == 1


RESUMED: list[float] = []  # the wall clock each NapNotes run read as its code resumed


@workflow.defn
class NapNotes:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(NAP_S)
        RESUMED.append(time.time())


class _SendCounting(FakeTransport):
    """Notes, at each task run ahead on a timer that goes out, how many runs had resumed."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed_at_send: list[int] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if path.endswith("/timer-ahead"):
            self.resumed_at_send.append(len(RESUMED))
        return await super().call(method, path, **kwargs)


async def test_runs_due_together_all_resume_before_any_of_their_tasks_goes_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every sleep called at the same millisecond (a moment just ahead, so that none is
    # called after it): all the runs' timers come due at once.
    called_ms = math.ceil(time.time() * 1000) + 500
    monkeypatch.setattr(instance_module, "timer_requested_time", lambda: called_ms)
    RESUMED.clear()
    runs = 30
    transport = _SendCounting()
    processor = WorkflowTaskProcessor(transport, namespace="default", workflows=[WorkflowDefinition.of(NapNotes)],
                                      identity="test", run_timers_ahead=True)
    for i in range(runs):
        await processor.process(_task(FakeHistory("NapNotes", run_id=f"run-{i}")))
    sent: list[int] = await eventually(lambda: transport.resumed_at_send if len(transport.resumed_at_send) == runs
                                       else [], what="every run's task sent")
    # The first task went out once every run's code had resumed, none before its fire time.
    assert sent[0] == runs
    assert min(RESUMED) * 1000 >= called_ms + NAP_S * 1000
    assert processor.cached_run_ids == []  # each run finished, its task taken: it left the cache


async def test_the_collector_does_not_run_while_runs_due_together_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    @workflow.defn(name="NapSeesCollector")
    class NapSeesCollector:
        @workflow.run
        async def run(self) -> None:
            await workflow.sleep(NAP_S)
            seen.append(gc.isenabled())

    transport = FakeTransport()
    processor = WorkflowTaskProcessor(transport, namespace="default",
                                      workflows=[WorkflowDefinition.of(NapSeesCollector)], identity="test",
                                      run_timers_ahead=True)
    await processor.process(_task(FakeHistory("NapSeesCollector")))
    await eventually(lambda: transport.posted("/workflow-tasks/timer-ahead"), what="the timer's task")
    assert seen == [False] and gc.isenabled()


async def test_a_copy_of_the_task_answered_last_leaves_the_cached_run_and_its_timer_armed() -> None:
    # History's re-dispatch hands a task out again while the worker's answer is on its way (a
    # burst of starts): the copy starts at another time. Its answer goes out, but the cached
    # run stays the one whose answer history takes first, armed under that task's token.
    transport = FakeTransport()
    processor = _processor(transport)
    task, requested = await _first_task(processor, transport)
    run_id = task["run_id"]
    runner = processor._cache[run_id]
    copy = {**task, "task_token": "tok-copy", "started_time": int(time.time() * 1000)}
    await processor.process(copy)
    assert [c["task_token"] for c in transport.posted("/workflow-tasks/complete")] == [task["task_token"], "tok-copy"]
    assert processor._cache[run_id] is runner and run_id in processor._wakes
    [sent] = await eventually(lambda: transport.posted("/workflow-tasks/timer-ahead"), what="the timer's task")
    assert sent["task_token"] == task["task_token"]
    assert sent["workflow_task"]["after_started_time"] != copy["started_time"]
    assert sent["workflow_task"]["started_time"] >= requested + NAP_S * 1000


@workflow.defn
class TwoLongNaps:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(60)
        await workflow.sleep(60)


async def test_a_run_replayed_on_a_task_its_cached_run_cannot_apply_is_armed() -> None:
    transport = FakeTransport()
    processor = WorkflowTaskProcessor(transport, namespace="default", workflows=[WorkflowDefinition.of(TwoLongNaps)],
                                      identity="test", run_timers_ahead=True)
    history = FakeHistory("TwoLongNaps")
    await processor.process(_task(history))
    history.complete_task(transport.posted("/workflow-tasks/complete")[-1]["commands"])
    history.fire_timer("1")
    history.schedule_task()
    # The task handed out with the whole history (not on this worker's sticky queue): the
    # cached run cannot apply it from event 1 and replays.
    task = {**_task(history), "events": history.events}
    await processor.process(task)
    [_, second] = transport.posted("/workflow-tasks/complete")
    assert [c["attributes"]["timer_id"] for c in second["commands"]] == ["2"]
    assert task["run_id"] in processor._wakes  # its next timer wakes here, as any cached run's
    processor.close()
