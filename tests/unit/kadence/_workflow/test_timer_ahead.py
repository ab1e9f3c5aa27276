"""A workflow task run ahead on a user timer's firing by the worker that holds the run.

The runner knows when each timer it started is due (the call's time raised to history's
floor, plus the duration; history's own fire time once it has seen TimerStarted), runs the
next task on TimerFired(that timer) when asked, and meets it later in the events: one input,
the firing of that timer, the same time and commands; otherwise the worker replays.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kadence import workflow
from kadence._workflow import instance as instance_module
from kadence._workflow.runner import InconsistentHistoryError, RanAhead, WorkflowRunner
from tests.unit._fake_history import START_MS, FakeHistory, new_runner

pytestmark = pytest.mark.timeout(10)

CALL_MS = START_MS + 2500  # the wall clock when the code calls sleep (the first task is scheduled at +2000)
HANDED_MS = START_MS + 2400


@pytest.fixture(autouse=True)
def _call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance_module, "timer_requested_time", lambda: CALL_MS)


@workflow.defn
class Naps:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(1)
        at = workflow.now().isoformat()
        await workflow.sleep(2)
        return at


@workflow.defn
class TwoNaps:
    @workflow.run
    async def run(self) -> str:
        long = asyncio.ensure_future(workflow.sleep(5))
        await workflow.sleep(1)
        await long
        return "done"


@workflow.defn
class CancelledNap:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> bool:
        try:
            await workflow.wait_condition(lambda: self.go, timeout=1)
        except TimeoutError:
            return False
        return True

    @workflow.signal
    def wake(self) -> None:
        self.go = True


def _first_task(history: FakeHistory, runner: WorkflowRunner) -> list[dict[str, Any]]:
    commands = [c.to_json() for c in runner.apply(history.task_events(), started_time_ms=HANDED_MS)]
    assert history.open_task is not None
    started = history.add("WorkflowTaskStarted", scheduled_event_id=history.open_task, started_time=HANDED_MS)
    history.complete_task(commands, started=started)
    return commands


def _record_ahead(history: FakeHistory, ahead: RanAhead, timer_id: str) -> None:
    """What history writes when it takes the task: the firing, then the task scheduled,
    started by the worker at its time and completed; the worker is handed none of it."""
    first_event_id = history.first_event_id
    history.fire_timer(timer_id)
    scheduled = history.schedule_task()
    started = history.add("WorkflowTaskStarted", scheduled_event_id=scheduled, started_time=ahead.started_time,
                          ran_ahead_id=ahead.ahead_id)
    history.complete_task([c.to_json() for c in ahead.commands], started=started)
    history.first_event_id = first_event_id


def test_the_timer_is_due_at_the_call_plus_its_duration_and_the_task_on_its_firing_replays_the_same() -> None:
    history = FakeHistory("Naps")
    runner = new_runner(Naps, history)
    _first_task(history, runner)
    assert runner.next_timer() == ("1", CALL_MS + 1000)
    ahead = runner.run_timer_ahead(timer_id="1", time_ms=CALL_MS + 1003, ahead_id=11)
    assert ahead is not None
    assert (ahead.ahead_id, ahead.after_ahead_id, ahead.after_scheduled_event_id, ahead.after_started_time,
            ahead.started_time) == (11, 0, 2, HANDED_MS, CALL_MS + 1003)
    assert [(c.command_type, c.attributes["timer_id"]) for c in ahead.commands] == [("StartTimer", "2")]
    # The next timer, started by the task run ahead: from the call, history's floor being that task's time.
    assert runner.next_timer() == ("2", CALL_MS + 1003 + 2000)
    _record_ahead(history, ahead, "1")
    second = runner.run_timer_ahead(timer_id="2", time_ms=CALL_MS + 3004, ahead_id=12)
    assert second is not None and second.after_ahead_id == 11 and second.after_scheduled_event_id == 0
    _record_ahead(history, second, "2")
    result = json.loads(second.commands[0].attributes["result"])
    assert result.startswith("2023-11-14T22:13:2")  # workflow.now() in the task woken by the first timer
    # A replay of that history (as the Replayer does) decides the same, at the time the task ran ahead.
    replaying = new_runner(Naps, history)
    replaying.apply(history.events, run_live=False)
    assert replaying.finished
    # And the worker meets the tasks it ran ahead when history next hands one out.
    history.signal("unrelated")
    history.schedule_task()
    runner.apply(history.task_events(), started_time_ms=CALL_MS + 9000)


def test_a_task_never_runs_before_the_timer_is_due() -> None:
    history = FakeHistory("Naps")
    runner = new_runner(Naps, history)
    _first_task(history, runner)
    ahead = runner.run_timer_ahead(timer_id="1", time_ms=CALL_MS + 10, ahead_id=11)
    assert ahead is not None and ahead.started_time == CALL_MS + 1000


def test_history_s_fire_time_once_seen_is_the_least_it_waits() -> None:
    history = FakeHistory("Naps")
    first = new_runner(Naps, history)
    _first_task(history, first)
    # A worker that replays the run from history (its cache lost it): the due time is TimerStarted's.
    history.signal("unrelated")
    history.schedule_task()
    history.first_event_id = 1
    replayed = new_runner(Naps, history)
    replayed.apply(history.task_events(), started_time_ms=CALL_MS + 100)
    started = history.events[history.timer_started_id("1") - 1]
    assert replayed.next_timer() == ("1", started["attributes"]["start_time"] + 1000)


def test_two_timers_wake_on_the_earlier_and_a_cancelled_one_not_at_all() -> None:
    history = FakeHistory("TwoNaps")
    runner = new_runner(TwoNaps, history)
    commands = _first_task(history, runner)
    short = next(c["attributes"]["timer_id"] for c in commands if c["attributes"]["start_to_fire_timeout_ms"] == 1000)
    assert len(commands) == 2 and runner.next_timer() == (short, CALL_MS + 1000)
    history2 = FakeHistory("CancelledNap")
    cancelled = new_runner(CancelledNap, history2)
    _first_task(history2, cancelled)
    assert cancelled.next_timer() is not None
    history2.signal("wake")
    history2.schedule_task()
    woken = cancelled.apply(history2.task_events(), started_time_ms=CALL_MS + 200)
    assert [c.command_type for c in woken] == ["CancelTimer", "CompleteWorkflowExecution"]
    assert cancelled.next_timer() is None


def test_a_runner_that_has_seen_something_since_does_not_run_ahead() -> None:
    history = FakeHistory("Naps")
    runner = new_runner(Naps, history)
    _first_task(history, runner)
    history.signal("unrelated")
    history.schedule_task()
    runner.apply(history.task_events(), run_live=False)
    assert runner.next_timer() is None
    assert runner.run_timer_ahead(timer_id="1", time_ms=CALL_MS + 1003, ahead_id=11) is None


def test_history_firing_the_timer_itself_is_not_the_task_that_ran_here() -> None:
    history = FakeHistory("Naps")
    runner = new_runner(Naps, history)
    _first_task(history, runner)
    assert runner.run_timer_ahead(timer_id="1", time_ms=CALL_MS + 1003, ahead_id=11) is not None
    history.signal("unrelated")
    history.fire_timer("1")
    history.schedule_task()
    with pytest.raises(InconsistentHistoryError, match="ran ahead here on the firing of timer '1' alone"):
        runner.apply(history.task_events(), started_time_ms=CALL_MS + 1400)


@workflow.defn
class NapWithHelper:
    """Code ready both before and after the run method's return in the task its timer wakes."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.woke = asyncio.Event()

    @workflow.run
    async def run(self) -> list[str]:
        helper = asyncio.ensure_future(self._helper())
        await workflow.sleep(1)
        self.order.append("run")
        self.woke.set()
        del helper
        return self.order

    async def _helper(self) -> None:
        await self.woke.wait()
        self.order.append("helper")  # before the run's result is taken
        await asyncio.sleep(0)
        self.order.append("late")  # after it: the run has closed, nothing it decides counts
        await workflow.sleep(3)


def test_a_wake_in_two_halves_decides_what_one_activation_does() -> None:
    decided = []
    for halves in (False, True):
        history = FakeHistory("NapWithHelper")
        runner = new_runner(NapWithHelper, history)
        _first_task(history, runner)
        if halves:
            assert runner.wake_timer_ahead(timer_id="1", time_ms=CALL_MS + 1003)
            # The code ran up to the run method's return; the SDK's work on it waits, and so
            # does the helper made ready just before (in the same order, in the second half).
            assert runner.instance._obj.order == ["run"] and not runner.finished
            ahead = runner.finish_ahead(11)
        else:
            maybe = runner.run_timer_ahead(timer_id="1", time_ms=CALL_MS + 1003, ahead_id=11)
            assert maybe is not None
            ahead = maybe
        assert runner.finished and runner.instance._obj.order == ["run", "helper", "late"]
        decided.append([c.to_json() for c in ahead.commands])
        _record_ahead(history, ahead, "1")
        replaying = new_runner(NapWithHelper, history)  # the Replayer's view decides the same
        replaying.apply(history.events, run_live=False)
        assert replaying.finished
    assert decided[0] == decided[1]
    [complete] = decided[1]
    assert complete["command_type"] == "CompleteWorkflowExecution"
    assert json.loads(complete["attributes"]["result"]) == ["run", "helper"]


def test_a_wake_that_does_not_run_says_so_and_leaves_nothing_to_finish() -> None:
    history = FakeHistory("Naps")
    runner = new_runner(Naps, history)
    _first_task(history, runner)
    assert not runner.wake_timer_ahead(timer_id="9", time_ms=CALL_MS + 1003)  # no such timer
    with pytest.raises(RuntimeError, match="no task was woken"):
        runner.finish_ahead(11)


def test_a_timer_s_duration_is_rounded_up_to_the_millisecond_never_down() -> None:
    # Rounded to the nearest, 5.886428 s was 5,886 ms: the run woke 0.4 ms before the wall-clock
    # time it asked for had passed since its call (decision 0013's rule).
    assert instance_module.timer_duration_ms(5.886428594589233) == 5887
    assert instance_module.timer_duration_ms(1.0004) == 1001
    assert instance_module.timer_duration_ms(0.3) == 300  # 0.3 * 1000 is a hair over 300
    assert instance_module.timer_duration_ms(2) == 2000
    assert instance_module.timer_duration_ms(0.0) == 1 and instance_module.timer_duration_ms(0.00001) == 1
