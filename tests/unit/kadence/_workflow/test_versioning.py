"""workflow.patched, continue-as-new, wait_condition timeouts, and stored replay fixtures."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kadence import workflow
from kadence.exceptions import NonDeterminismError
from kadence.replay import Replayer
from tests.unit._fake_history import Driver, FakeHistory
from tests.unit.kadence._workflow.test_runner import Greet, GreetChanged, Waiter

pytestmark = pytest.mark.timeout(30)
HISTORIES = Path(__file__).parent / "histories"


@workflow.defn(name="Order")
class OrderV1:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(10)
        return "v1"


@workflow.defn(name="Order")
class OrderV2:
    @workflow.run
    async def run(self) -> str:
        if workflow.patched("charge-first"):
            await workflow.execute_activity("charge", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(10)
        return "v2"


def test_patched_keeps_old_runs_on_the_old_path() -> None:
    history = FakeHistory("Order")
    driver = Driver(OrderV1, history)
    driver.step()  # an old run that is asleep when the new code is deployed
    history.fire_timer("1")
    history.schedule_task()
    history.first_event_id = 1
    commands = Driver(OrderV2, history).step()
    assert [c["command_type"] for c in commands] == ["CompleteWorkflowExecution"]


def test_patched_records_a_marker_for_new_runs_and_replays() -> None:
    history = FakeHistory("Order")
    driver = Driver(OrderV2, history)
    commands = driver.step()
    assert [c["command_type"] for c in commands] == ["RecordMarker", "ScheduleActivityTask"]
    assert commands[0]["attributes"]["marker_name"] == "patch:charge-first"
    history.complete_activity("1", None)
    driver.next_task()
    history.fire_timer("1")
    driver.next_task()
    assert Replayer(workflows=[OrderV2]).replay(history.events) == []
    with pytest.raises(NonDeterminismError, match="MarkerRecorded"):
        Replayer(workflows=[OrderV1]).replay(history.events)


@workflow.defn(name="Order")
class OrderV3:
    """Every run that took the old path has closed: only the new one is left."""

    @workflow.run
    async def run(self) -> str:
        workflow.deprecate_patch("charge-first")
        await workflow.execute_activity("charge", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(10)
        return "v3"


@workflow.defn(name="Order")
class OrderV4:
    """The deprecated patch's call is gone too."""

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity("charge", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(10)
        return "v4"


def _history_of(definition: type) -> list[dict[str, Any]]:
    history = FakeHistory("Order")
    driver = Driver(definition, history)
    driver.step()
    history.complete_activity("1", None)
    driver.next_task()
    history.fire_timer("1")
    driver.next_task()
    return history.events


def test_deprecate_patch_replays_the_runs_that_recorded_the_patch() -> None:
    assert Replayer(workflows=[OrderV3]).replay(_history_of(OrderV2)) == []


def test_a_deprecated_patchs_marker_lets_a_later_deploy_drop_the_call() -> None:
    history = FakeHistory("Order")
    commands = Driver(OrderV3, history).step()
    assert [c["command_type"] for c in commands] == ["RecordMarker", "ScheduleActivityTask"]
    assert json.loads(commands[0]["attributes"]["details"]) == {"patch_id": "charge-first", "deprecated": True}
    events = _history_of(OrderV3)
    assert Replayer(workflows=[OrderV4]).replay(events) == []
    assert Replayer(workflows=[OrderV2]).replay(events) == []  # still patched for code that asks
    # A marker not deprecated is still the code's to match, as in Temporal.
    with pytest.raises(NonDeterminismError, match="patch:charge-first"):
        Replayer(workflows=[OrderV4]).replay(_history_of(OrderV2))


@workflow.defn
class Counter:
    @workflow.run
    async def run(self, n: int) -> int:
        if n < 3:
            workflow.continue_as_new(n + 1)
        return n


def test_continue_as_new_command() -> None:
    history = FakeHistory("Counter", 1)
    commands = Driver(Counter, history).step()
    assert commands == [
        {
            "command_type": "ContinueAsNewWorkflowExecution",
            "attributes": {"workflow_type": "Counter", "task_queue": "tq", "input": "[2]"},
        }
    ]


@workflow.defn
class Patient:
    def __init__(self) -> None:
        self.ready = False

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.wait_condition(lambda: self.ready, timeout=timedelta(seconds=30))
        except TimeoutError:
            return "gave up"
        return "ready"

    @workflow.signal
    def go(self) -> None:
        self.ready = True


def test_wait_condition_timeout_is_a_durable_timer() -> None:
    history = FakeHistory("Patient")
    driver = Driver(Patient, history)
    commands = driver.step()
    assert commands[0]["attributes"].pop("requested_time") > 0  # the call's wall-clock time
    assert commands == [
        {"command_type": "StartTimer", "attributes": {"timer_id": "1", "start_to_fire_timeout_ms": 30_000}}
    ]
    history.fire_timer("1")
    assert json.loads(driver.next_task()[0]["attributes"]["result"]) == "gave up"


def test_wait_condition_satisfied_cancels_its_timer() -> None:
    history = FakeHistory("Patient")
    driver = Driver(Patient, history)
    driver.step()
    history.signal("go")
    commands = driver.next_task()
    assert [c["command_type"] for c in commands] == ["CancelTimer", "CompleteWorkflowExecution"]
    assert Replayer(workflows=[Patient]).replay(history.events) == []


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HISTORIES / name).read_text())
    return data


@pytest.mark.parametrize("name", ["greet_completed.json", "waiter_signals.json"])
def test_stored_histories_replay(name: str) -> None:
    assert Replayer(workflows=[Greet, Waiter]).replay(_fixture(name)) == []


def test_stored_history_detects_changed_code() -> None:
    with pytest.raises(NonDeterminismError, match="compose_farewell"):
        Replayer(workflows=[GreetChanged]).replay(_fixture("greet_completed.json"))


def test_write_fixtures_helper_matches_stored(tmp_path: Path) -> None:
    # The stored fixtures are what these drivers produce; regenerate with write_fixtures().
    for name, history in _build_fixtures().items():
        assert _fixture(name)["events"] == history.events


def _build_fixtures() -> dict[str, FakeHistory]:
    greet = FakeHistory("Greet", "World", run_id="run-greet")
    driver = Driver(Greet, greet)
    driver.step()
    greet.complete_activity("1", "Hello, World")
    driver.next_task()
    waiter = FakeHistory("Waiter", run_id="run-waiter")
    driver = Driver(Waiter, waiter)
    driver.step()
    waiter.signal("add", "a")
    waiter.schedule_task()
    commands = [c.to_json() for c in driver.runner.apply(waiter.task_events())]
    started = waiter.start_task()
    waiter.signal("add", "b")  # arrives while the task runs: seen by the next one
    waiter.complete_task(commands, started=started)
    waiter.schedule_task()
    driver.step()
    waiter.signal("finish")
    waiter.schedule_task()
    waiter.fail_task()  # a failed task decides nothing; its inputs carry over
    driver.next_task()
    return {"greet_completed.json": greet, "waiter_signals.json": waiter}


def write_fixtures() -> None:
    for name, history in _build_fixtures().items():
        payload = {"workflow_id": "wf-1", "run_id": history.run_id, "events": history.events}
        (HISTORIES / name).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    write_fixtures()
