"""A workflow task run ahead on an activity's result goes through the interceptors' task
chain (kind RAN_AHEAD), which the processor makes once: each call still gets its own task
run ahead, also when an interceptor goes on in a task of its own or two calls interleave."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kadence._worker.workflow_tasks import WorkflowTaskProcessor
from kadence._workflow.definition import WorkflowDefinition
from kadence.interceptor import Interceptor, TaskKind, WorkerTaskInput, WorkerTaskInterceptor
from tests.unit._fake_history import FakeHistory
from tests.unit.kadence._worker.test_worker import FakeTransport, _task
from tests.unit.kadence._workflow.test_runner import Greet

pytestmark = pytest.mark.timeout(30)


class _InATaskOfItsOwn(WorkerTaskInterceptor):
    """Goes on in another asyncio task, after a loop turn (so two calls interleave)."""

    def __init__(self, next: WorkerTaskInterceptor, seen: list[TaskKind]) -> None:
        super().__init__(next)
        self._seen = seen

    async def run_task(self, input: WorkerTaskInput) -> None:
        self._seen.append(input.kind)
        await asyncio.sleep(0)
        await asyncio.get_running_loop().create_task(self.next.run_task(input))


class _Seen(Interceptor):
    def __init__(self) -> None:
        self.kinds: list[TaskKind] = []

    def intercept_task(self, next: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
        return _InATaskOfItsOwn(next, self.kinds)


async def _first_task(processor: WorkflowTaskProcessor, transport: FakeTransport, history: FakeHistory,
                      run_id: str) -> dict[str, Any]:
    task = {**_task(history), "run_id": run_id}
    await processor.process(task)
    completion = transport.posted("/workflow-tasks/complete")[-1]
    assert completion["task_token"] == task["task_token"]
    history.complete_task(completion["commands"])
    return task


async def test_runs_ahead_through_the_chain_made_once_each_call_its_own() -> None:
    seen = _Seen()
    histories = {run: FakeHistory("Greet", run, run_id=run) for run in ("run-a", "run-b")}
    transport = FakeTransport()
    processor = WorkflowTaskProcessor(transport, namespace="default", workflows=[WorkflowDefinition.of(Greet)],
                                      identity="test", interceptors=[seen])
    for run, history in histories.items():
        await _first_task(processor, transport, history, run)
    assert set(processor.cached_run_ids) == {"run-a", "run-b"}

    async def complete(run: str) -> None:
        history = histories[run]
        task = {"run_id": run, "workflow_id": "wf-1", "workflow_type": "Greet", "activity_id": "1",
                "scheduled_event_id": history.activity_scheduled_id("1")}
        await processor.complete_activity(task, {"task_token": f"act-{run}", "result": f'"hi {run}"'})

    await asyncio.gather(complete("run-a"), complete("run-b"))
    answers = {b["task_token"]: b for b in transport.posted("/activity-tasks/complete")}
    for run in ("run-a", "run-b"):
        [command] = answers[f"act-{run}"]["workflow_task"]["commands"]
        assert command["command_type"] == "CompleteWorkflowExecution"
        assert command["attributes"]["result"] == f'"hi {run}!"'
    assert seen.kinds.count(TaskKind.RAN_AHEAD) == 2
    ids = {answers[f"act-{run}"]["workflow_task"]["ahead_id"] for run in ("run-a", "run-b")}
    assert len(ids) == 2 and 0 not in ids


def test_a_forked_process_draws_other_run_ahead_ids_than_its_parent() -> None:
    import os

    processor = WorkflowTaskProcessor(FakeTransport(), namespace="default", workflows=[], identity="test")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id goes to the parent
        os.write(write, str(processor._ahead_id()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = int(os.read(read, 64).decode())
    os.close(read)
    assert child != processor._ahead_id()
