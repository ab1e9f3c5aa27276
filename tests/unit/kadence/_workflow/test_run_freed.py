"""A run that leaves the worker's cache (finished, or evicted while it waits) is freed by
reference counting, not left to the cyclic collector, whose full passes walk every object
of the process: the cost an SDK worker on CPython's default collector pays for a run kept
alive past its end. The collector is off in these tests, so anything held only by a
reference cycle stays alive and fails them."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from kadence import workflow
from kadence._tracing_interceptor import TracingInterceptor
from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.instance import WorkflowInstance
from kadence._workflow.runner import WorkflowRunner
from kadence.exceptions import WorkflowTaskError
from tests.unit._fake_history import Driver, FakeHistory

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class OneActivity:
    @workflow.run
    async def run(self, value: str) -> str:
        return str(await workflow.execute_activity("echo", value, start_to_close_timeout=timedelta(seconds=10)))


@workflow.defn
class Sleeps:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(minutes=1))


@workflow.defn
class Waits:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)


@workflow.defn
class WaitsOnItsTask:
    @workflow.run
    async def run(self) -> None:
        async def inner() -> Any:
            return await workflow.execute_activity("echo", "x", start_to_close_timeout=timedelta(seconds=10))

        await asyncio.create_task(inner())


@workflow.defn
class SignalHandlerWaits:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        await workflow.sleep(timedelta(minutes=1))

    @workflow.signal
    async def work(self) -> None:  # still running at eviction: the run tracks its task
        await workflow.execute_activity("echo", "x", start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class KeywordOnly:
    @workflow.run
    async def run(self, *, value: str) -> str:
        return value


@pytest.fixture(autouse=True)
def no_collector() -> Iterator[None]:
    # No gc.collect() first: what the test makes is freed, or not, whatever garbage is already
    # there, and a full pass over a whole run's heap took 1.4 to 3 s per test.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _instance_ref(driver: Driver) -> weakref.ReferenceType[WorkflowInstance]:
    return weakref.ref(driver.runner.instance)


def test_a_finished_run_is_freed_without_the_collector() -> None:
    history = FakeHistory("OneActivity", "v")
    driver = Driver(OneActivity, history)
    driver.step()
    history.complete_activity("1", "v")
    driver.next_task()
    assert driver.runner.finished
    ref = _instance_ref(driver)
    driver.runner.dispose()
    del driver
    assert ref() is None


@pytest.mark.parametrize("workflow_cls,args", [(OneActivity, ("v",)), (Sleeps, ()), (Waits, ()),
                                               (WaitsOnItsTask, ())])
def test_a_run_evicted_while_it_waits_is_freed_without_the_collector(workflow_cls: type, args: tuple[Any, ...]) -> None:
    history = FakeHistory(workflow_cls.__name__, *args)
    driver = Driver(workflow_cls, history)
    driver.step()
    assert not driver.runner.finished  # it waits: on an activity, a timer or a condition
    ref = _instance_ref(driver)
    driver.runner.dispose()
    del driver
    assert ref() is None


def test_a_run_evicted_while_a_signal_handler_runs_is_freed_without_the_collector() -> None:
    history = FakeHistory("SignalHandlerWaits")
    driver = Driver(SignalHandlerWaits, history)
    driver.step()
    history.signal("work")
    driver.next_task()
    assert not driver.runner.finished and not driver.runner.instance.all_handlers_finished()
    ref = _instance_ref(driver)
    driver.runner.dispose()
    del driver
    assert ref() is None


def test_a_run_method_called_with_arguments_it_cannot_take_fails_the_workflow_task() -> None:
    history = FakeHistory("KeywordOnly", "v")
    driver = Driver(KeywordOnly, history)
    with pytest.raises(WorkflowTaskError, match="TypeError"):
        driver.step()



def test_a_run_waiting_on_one_activity_holds_few_objects_for_the_collector() -> None:
    """Each full collection walks every object of every cached run: 36 per run waiting on
    one activity before this was pinned, 24 then, 16 on CPython 3.11 now (a margin for other
    versions): no dict of the instance's attributes, no chain ends kept without workflow
    interceptors, no empty list of pending events, no weak reference in asyncio's registry
    of tasks, no bound method as the run's done callback, no coroutine of
    workflow.execute_activity's own, the activity's record its future itself."""

    def waiting(i: int) -> WorkflowRunner:
        history = FakeHistory("OneActivity", "v", run_id=f"run-{i}")
        # With the interceptors every worker has (the SDK's tracing, which has no workflow links).
        runner = WorkflowRunner(WorkflowDefinition.of(OneActivity), namespace="default", workflow_id="wf-1",
                                run_id=history.run_id, interceptors=[TracingInterceptor()])
        runner.apply(history.task_events())
        return runner

    waiting(-1)  # what is made once per process (caches) is made here
    gc.collect()
    before = len(gc.get_objects())
    runners = [waiting(i) for i in range(200)]
    per_run = (len(gc.get_objects()) - before - 1) / len(runners)  # - 1: the list of runners
    assert per_run <= 18, per_run
