"""Updates in the SDK: the workflow runtime driven through synthetic histories (validator
accepts or rejects, sync and async handlers, an update while the workflow sleeps, failures,
replay from the accepted event), and the decorators' checks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kadence import workflow
from kadence._workflow.definition import WorkflowDefinition, update_name_of
from kadence.exceptions import ApplicationError, NonDeterminismError
from kadence.replay import Replayer
from tests.unit._fake_history import Driver, FakeHistory

pytestmark = pytest.mark.timeout(30)


@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.value

    @workflow.update
    def add(self, n: int) -> int:
        self.value += n
        return self.value

    @add.validator  # type: ignore[attr-defined]
    def check_add(self, n: int) -> None:
        if n < 0:
            raise ApplicationError("negative", type="Negative")

    @workflow.update(name="slow-add")
    async def slow_add(self, n: int) -> int:
        await workflow.sleep(timedelta(minutes=1))
        self.value += n
        return self.value

    @workflow.update
    async def finish(self) -> str:
        self.done = True
        return "finishing"

    @workflow.update
    def explode(self) -> None:
        raise ApplicationError("boom", type="Boom")


def _types(commands: list[dict[str, object]]) -> list[object]:
    return [c["command_type"] for c in commands]


def test_an_accepted_sync_update_accepts_then_completes_with_the_result_and_replays() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    assert driver.step() == []
    history.request_update("u1", "add", 5)
    commands = driver.next_task()
    assert _types(commands) == ["AcceptWorkflowUpdate", "CompleteWorkflowUpdate"]
    assert commands[1]["attributes"] == {"update_id": "u1", "result": "5", "failure": None}
    history.request_update("u2", "finish")
    assert _types(driver.next_task()) == ["AcceptWorkflowUpdate", "CompleteWorkflowUpdate",
                                          "CompleteWorkflowExecution"]
    assert history.events[-1]["attributes"]["result"] == "5"
    # Replayed from history alone, the handlers run again from the accepted input.
    assert Replayer(workflows=[Counter]).replay(history.events) == []


def test_a_validator_rejection_is_a_command_without_event_and_changes_nothing() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    driver.step()
    history.request_update("u1", "add", -1)
    history.request_update("u2", "nope")
    commands = driver.next_task()
    assert _types(commands) == ["RejectWorkflowUpdate", "RejectWorkflowUpdate"]
    failure = commands[0]["attributes"]["failure"]  # type: ignore[index]
    assert failure["type"] == "Negative" and failure["message"] == "negative"
    assert commands[1]["attributes"]["failure"]["type"] == "UpdateNotFound"  # type: ignore[index]
    assert not [e for e in history.events if "Update" in e["event_type"]]
    history.request_update("u3", "add", 2)
    assert driver.next_task()[1]["attributes"]["result"] == "2"  # type: ignore[index]
    assert Replayer(workflows=[Counter]).replay(history.events) == []


def test_an_async_update_waits_on_a_timer_and_completes_in_a_later_task() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    driver.step()
    history.request_update("u1", "slow-add", 3)
    assert _types(driver.next_task()) == ["AcceptWorkflowUpdate", "StartTimer"]
    timer_id = next(e for e in history.events if e["event_type"] == "TimerStarted")["attributes"]["timer_id"]
    history.fire_timer(timer_id)
    commands = driver.next_task()
    assert _types(commands) == ["CompleteWorkflowUpdate"] and commands[0]["attributes"]["result"] == "3"
    assert Replayer(workflows=[Counter]).replay(history.events) == []


def test_a_handler_raising_application_error_fails_the_update_not_the_workflow() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    driver.step()
    history.request_update("u1", "explode")
    commands = driver.next_task()
    assert _types(commands) == ["AcceptWorkflowUpdate", "CompleteWorkflowUpdate"]
    attrs = commands[1]["attributes"]
    assert attrs["result"] is None and attrs["failure"]["type"] == "Boom"  # type: ignore[index]


def test_the_workflow_waits_for_running_handlers_before_it_returns() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    driver.step()
    history.request_update("u1", "slow-add", 1)
    history.request_update("u2", "finish")
    # finish sets done, but slow-add still runs: the workflow does not return yet.
    assert _types(driver.next_task()) == ["AcceptWorkflowUpdate", "AcceptWorkflowUpdate", "StartTimer",
                                          "CompleteWorkflowUpdate"]
    timer_id = next(e for e in history.events if e["event_type"] == "TimerStarted")["attributes"]["timer_id"]
    history.fire_timer(timer_id)
    assert _types(driver.next_task()) == ["CompleteWorkflowUpdate", "CompleteWorkflowExecution"]
    assert Replayer(workflows=[Counter]).replay(history.events) == []


def test_replay_with_another_handler_order_is_non_deterministic() -> None:
    history = FakeHistory("Counter")
    driver = Driver(Counter, history)
    driver.step()
    history.request_update("u1", "add", 1)
    driver.next_task()
    # History says update u1 completed; edited to name another update, the replay disagrees.
    completed = next(e for e in history.events if e["event_type"] == "WorkflowExecutionUpdateCompleted")
    completed["attributes"]["update_id"] = "other"
    with pytest.raises(NonDeterminismError, match="update_id='other'"):
        Replayer(workflows=[Counter]).replay(history.events)


def test_decorators_record_the_update_and_its_validator() -> None:
    definition = WorkflowDefinition.of(Counter)
    assert sorted(definition.updates) == ["add", "explode", "finish", "slow-add"]
    assert definition.validator_of("add") is not None and definition.validator_of("finish") is None
    assert update_name_of(Counter.slow_add) == "slow-add" and update_name_of("x") == "x"
    with pytest.raises(TypeError, match="plain `def`"):
        @workflow.defn
        class Bad:
            @workflow.run
            async def run(self) -> None: ...

            @workflow.update
            def u(self) -> None: ...

            @u.validator  # type: ignore[attr-defined,untyped-decorator]
            async def v(self) -> None: ...
