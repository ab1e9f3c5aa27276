"""Feeding one run's history into a workflow instance, by the protocol's activation rule.

The rule (docs/protocol.md): code for the workflow task whose ``WorkflowTaskScheduled``
has id S sees the input events with id < S that no earlier activation saw; events that
arrive after S wait for the next activation; a task that failed or timed out decided
nothing and its inputs carry over; the commands of a completed task are the events that
name its ``WorkflowTaskCompleted`` in ``workflow_task_completed_event_id``, and code
replaying that task must decide the same commands in the same order.

A :class:`WorkflowRunner` consumes events strictly in order, so the same object serves a
full replay, the worker's cache (new events applied incrementally) and the Replayer. A
cached runner may also run tasks ahead of history (:meth:`WorkflowRunner.run_ahead` on an
activity's result, :meth:`WorkflowRunner.run_timer_ahead` on a user timer's firing); it
meets them later in the events, in order, and checks each against what it ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kadence._workflow.children import CHILD_COMMAND_EVENT_TYPE, CHILD_IDENTITY_ATTRIBUTE, CHILD_INPUT_EVENT_TYPES
from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.instance import PATCH_MARKER_PREFIX, UPDATE_REQUESTED, Command, WorkflowInstance
from kadence._workflow.local_activities import LocalActivityOutcome, LocalActivityRequest
from kadence.converter import DataConverter
from kadence.exceptions import KadenceError, NonDeterminismError
from kadence.interceptor import Interceptor
from kadence_protocol.enums import CommandType, EventType

__all__ = [
    "COMMAND_EVENT_TYPE",
    "INPUT_EVENT_TYPES",
    "InconsistentHistoryError",
    "RanAhead",
    "WorkflowRunner",
]

#: Events workflow code reacts to.
INPUT_EVENT_TYPES = frozenset(
    {
        EventType.WORKFLOW_EXECUTION_STARTED,
        EventType.WORKFLOW_EXECUTION_SIGNALED,
        EventType.ACTIVITY_TASK_COMPLETED,
        EventType.ACTIVITY_TASK_FAILED,
        EventType.ACTIVITY_TASK_TIMED_OUT,
        EventType.ACTIVITY_TASK_CANCELED,
        EventType.TIMER_FIRED,
        EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    }
) | CHILD_INPUT_EVENT_TYPES

#: The history event each command becomes.
COMMAND_EVENT_TYPE: dict[str, EventType] = {
    CommandType.SCHEDULE_ACTIVITY_TASK: EventType.ACTIVITY_TASK_SCHEDULED,
    CommandType.START_TIMER: EventType.TIMER_STARTED,
    CommandType.CANCEL_TIMER: EventType.TIMER_CANCELED,
    CommandType.COMPLETE_WORKFLOW_EXECUTION: EventType.WORKFLOW_EXECUTION_COMPLETED,
    CommandType.FAIL_WORKFLOW_EXECUTION: EventType.WORKFLOW_EXECUTION_FAILED,
    CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION: EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    CommandType.RECORD_MARKER: EventType.MARKER_RECORDED,
    CommandType.REQUEST_CANCEL_ACTIVITY_TASK: EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
    CommandType.CANCEL_WORKFLOW_EXECUTION: EventType.WORKFLOW_EXECUTION_CANCELED,
    CommandType.ACCEPT_WORKFLOW_UPDATE: EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    CommandType.COMPLETE_WORKFLOW_UPDATE: EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    **CHILD_COMMAND_EVENT_TYPE,
}
#: Commands that leave no event: a rejected update is told to its caller only.
_EVENTLESS_COMMANDS = frozenset({CommandType.REJECT_WORKFLOW_UPDATE})
_COMMAND_EVENTS = frozenset(COMMAND_EVENT_TYPE.values())
# Sets made once: on CPython 3.11 each read of an enum member through its class goes through
# the enum metaclass's slow attribute hook, and these are checked per event and per command.
_TASK_ENDED_WITHOUT_OUTCOME = frozenset({EventType.WORKFLOW_TASK_FAILED, EventType.WORKFLOW_TASK_TIMED_OUT})
_TIMER_BOOKKEEPING = frozenset({EventType.TIMER_STARTED, EventType.TIMER_CANCELED})
_TIMER_COMMANDS = frozenset({CommandType.START_TIMER, CommandType.CANCEL_TIMER})

#: The attribute that must agree between a command and its event, beyond the type.
_IDENTITY_ATTRIBUTE: dict[str, str] = {
    CommandType.SCHEDULE_ACTIVITY_TASK: "activity_type",
    CommandType.START_TIMER: "timer_id",
    CommandType.CANCEL_TIMER: "timer_id",
    CommandType.RECORD_MARKER: "marker_name",
    CommandType.REQUEST_CANCEL_ACTIVITY_TASK: "scheduled_event_id",
    CommandType.ACCEPT_WORKFLOW_UPDATE: "update_id",
    CommandType.COMPLETE_WORKFLOW_UPDATE: "update_id",
    **CHILD_IDENTITY_ATTRIBUTE,
}


#: How many workflow tasks a runner may run ahead before history's events confirm them.
MAX_AHEAD = 100


class InconsistentHistoryError(KadenceError):
    """Events do not follow on from what this runner has seen (a gap, or a task it ran
    live that history says failed). The worker answers by replaying the full history."""

    retryable = True


@dataclass
class _OpenTask:
    """A workflow task that is scheduled and has no outcome yet in the events seen so far."""

    scheduled_event_id: int
    time_ms: int
    visible_inputs: int  # how many of the pending inputs have ids below scheduled_event_id
    # The earliest time history counts a timer this task starts from (history's timer_start.py):
    # its WorkflowTaskScheduled's time, or for a task run ahead its own time.
    timer_floor_ms: int = 0
    produced: list[Command] | None = None  # set once the task ran live
    ahead_id: int = 0  # not 0: it ran ahead here, before history scheduled it (see WorkflowRunner.run_ahead)
    history_ran_ahead: bool = False  # history records it as run ahead (its start has a ran_ahead_id)
    # What its WorkflowTaskScheduled says of the run's history besides its id (limits.py).
    history_size: int = 0
    continue_as_new_suggested: bool = False
    attempt: int = 1  # its WorkflowTaskScheduled's (more than 1: its code failed before)


class RanAhead(NamedTuple):
    """A workflow task run ahead: what history needs to check it and record it."""

    ahead_id: int  # the id it runs under
    after_ahead_id: int  # the task it follows, when that one ran ahead too; else 0 and:
    after_scheduled_event_id: int  # the task it follows: the last one this runner was handed
    after_started_time: int  # the time of the task it follows
    started_time: int  # this task's time: its workflow.now()
    commands: list[Command]

    def to_json(self) -> dict[str, Any]:
        return {"ahead_id": self.ahead_id, "after_ahead_id": self.after_ahead_id,
                "after_scheduled_event_id": self.after_scheduled_event_id,
                "after_started_time": self.after_started_time, "started_time": self.started_time,
                "commands": [c.to_json() for c in self.commands]}


@dataclass(frozen=True)
class _Ahead:
    """A task this runner ran ahead, on one activity's result, waiting to meet its events."""

    ahead_id: int
    activity: int  # the scheduled_event_id of the activity whose result it saw (0: a timer's firing)
    time_ms: int
    produced: list[Command]
    timer_id: str = ""  # the user timer whose firing it saw (run_timer_ahead)


class WorkflowRunner:
    """Applies a run's events in order to one :class:`WorkflowInstance`."""

    def __init__(self, definition: WorkflowDefinition, *, namespace: str, workflow_id: str, run_id: str,
                 data_converter: DataConverter | None = None, interceptors: Sequence[Interceptor] = ()) -> None:
        self.instance = WorkflowInstance(definition, namespace=namespace, workflow_id=workflow_id, run_id=run_id,
                                         data_converter=data_converter, interceptors=interceptors)
        self.last_event_id = 0
        # The input events no task has taken yet, oldest first; the empty tuple while there are
        # none (a list kept empty was one more object per cached run for the collector to walk).
        self._pending: list[Mapping[str, Any]] | tuple[()] = ()
        self._open: _OpenTask | None = None
        # In the order they ran; a tuple, so that the many runs that never run ahead share
        # the empty one (a cached run's objects are what the collector's full passes walk).
        self._aheads: tuple[_Ahead, ...] = ()
        # Pending user timers by id -> when this runner may run a task on their firing
        # (run_timer_ahead), in ms by the wall clock: never before history's fire time.
        self._timer_due: dict[str, int] = {}
        # wake_timer_ahead(): the task woken and not finished yet (its time and timer).
        self._waking: tuple[int, str] | None = None

    @property
    def ahead(self) -> bool:
        """A task ran ahead here that history's events have not confirmed yet."""
        return bool(self._aheads)

    @property
    def finished(self) -> bool:
        """The workflow decided to close (complete, fail or continue as new)."""
        return self.instance.finished

    def apply(
        self, events: Sequence[Mapping[str, Any]], *, run_live: bool = True, started_time_ms: int = 0,
        updates: Sequence[Mapping[str, Any]] = (),
    ) -> list[Command]:
        """Apply the next events; replayed tasks are checked against history.

        When the events end with a workflow task that has no outcome yet and ``run_live``
        is true, that task runs now and its commands are returned (they are what the
        worker sends). Otherwise the result is empty. ``updates`` are the update requests
        the poll handed out with the task (update_id, name, input): that task validates
        them, after its input events. ``started_time_ms`` is the task's
        started time from the poll (history records it with the start): the task's
        ``workflow.now()``; 0 leaves it at the scheduled time.
        """
        commands_of = _commands_by_completion(events)
        if self.last_event_id == 0:
            # A run made by a reset: its copied events were decided with the old run's seed.
            reset = next((e for e in events if _reset_marker(e)), None)
            if reset is not None:
                self.instance.reseed(str(reset["attributes"]["base_run_id"]))
        for event in events:
            event_id = int(event["event_id"])
            if event_id != self.last_event_id + 1:
                raise InconsistentHistoryError(f"expected event {self.last_event_id + 1}, got event {event_id}")
            self._step(event, commands_of)
            self.last_event_id = event_id
        task = self._open
        if task is not None and task.ahead_id:
            # History scheduled the task this runner ran ahead but did not take its commands
            # (it is being handed out): what ran here is not history.
            raise InconsistentHistoryError(f"workflow task {task.scheduled_event_id} ran ahead here, "
                                           "but history handed it out instead of recording it")
        if task is None or task.produced is not None or not run_live:
            return []
        if started_time_ms:
            task.time_ms = started_time_ms
        self._see_history(task)
        requested: list[Mapping[str, Any]] = [{"event_type": UPDATE_REQUESTED, "event_id": 0, "attributes": u}
                                              for u in updates]
        task.produced = self.instance.activate(self._take_inputs(task) + requested, time_ms=task.time_ms,
                                               recorded=None)
        self._note_timers(task.produced, task.timer_floor_ms)
        return task.produced

    def run_ahead(self, *, activity_id: str, scheduled_event_id: int, result: str | None,
                  time_ms: int, ahead_id: int) -> RanAhead | None:
        """Run the next workflow task now, on one activity's result, before history has it.

        Possible right after a task ran live here, and after tasks run ahead since, with
        nothing seen since: the task history would schedule on this result alone sees
        exactly that. ``time_ms`` is the task's ``workflow.now()`` (raised to the previous
        task's if earlier); ``ahead_id`` (not 0) names the task, for history and for the
        next task run ahead. Returns what the activity's answer carries, or None when the
        runner is not in that position. The tasks' events, when they come, are checked
        against what ran here (the input each saw, its time, its commands); any difference
        raises :class:`InconsistentHistoryError`.
        """
        task = self._open
        if not self._may_run_ahead(ahead_id):
            return None
        assert task is not None and task.produced is not None
        for produced in (task.produced, *(a.produced for a in self._aheads)):
            for command in produced:
                # The activity may come from a task whose commands history has not numbered
                # for this runner yet: the activity's task names its event id.
                if (command.command_type == CommandType.SCHEDULE_ACTIVITY_TASK and command.on_recorded is not None
                        and command.attributes.get("activity_id") == activity_id):
                    command.on_recorded(scheduled_event_id)
        result_event = {"event_type": EventType.ACTIVITY_TASK_COMPLETED, "event_id": 0,
                        "attributes": {"scheduled_event_id": scheduled_event_id, "result": result}}
        return self._run_on(result_event, time_ms, ahead_id, activity=scheduled_event_id)

    def answered(self, scheduled_event_id: int, attempt: int) -> bool:
        """Whether the last task that ran live here is the one scheduled at
        ``scheduled_event_id`` (that attempt), with nothing run ahead or seen since: a task
        with those ids handed out again is a copy of one this runner has answered."""
        task = self._open
        return (task is not None and task.produced is not None and not task.ahead_id and not self._aheads
                and task.scheduled_event_id == scheduled_event_id and task.attempt == attempt)

    def next_timer(self) -> tuple[str, int] | None:
        """The pending user timer this runner may run the next task ahead on, and when (ms
        by the wall clock): the earliest one the code waits for, when the runner is where
        :meth:`run_timer_ahead` would run; None otherwise."""
        if not self._timer_due or not self._may_run_ahead(1):
            return None
        waiting = [(due, timer_id) for timer_id in self.instance.loop.pending_timer_ids()
                   if (due := self._timer_due.get(timer_id)) is not None]
        if not waiting:
            return None
        due, timer_id = min(waiting)
        return timer_id, due

    def run_timer_ahead(self, *, timer_id: str, time_ms: int, ahead_id: int) -> RanAhead | None:
        """Run the next workflow task now, on the firing of the user timer ``timer_id``, before
        history fires it: as :meth:`run_ahead` does on an activity's result. ``time_ms`` (the
        task's ``workflow.now()``) is raised to the timer's due time if earlier. None when the
        runner is not in that position or the timer is not pending here."""
        due = self._timer_due.get(timer_id)
        if due is None or timer_id not in self.instance.loop.pending_timer_ids() or not self._may_run_ahead(ahead_id):
            return None
        fired = {"event_type": EventType.TIMER_FIRED, "event_id": 0,
                 "attributes": {"timer_id": timer_id, "started_event_id": 0}}
        return self._run_on(fired, max(time_ms, due), ahead_id, timer_id=timer_id)

    def wake_timer_ahead(self, *, timer_id: str, time_ms: int) -> bool:
        """:meth:`run_timer_ahead` in two halves: this one resumes the code (up to where the
        run's main method returns, WorkflowInstance.wake), :meth:`finish_ahead` does the rest
        and returns the task. False (nothing ran) when run_timer_ahead would return None."""
        due = self._timer_due.get(timer_id)
        if due is None or not self.instance.loop.has_timer(timer_id) or not self._may_run_ahead(1):
            return False
        time_ms = self._ahead_ms(max(time_ms, due), timer_id)
        self._waking = (time_ms, timer_id)
        self.instance.wake_timer(timer_id, time_ms=time_ms)  # its TimerFired, without making the event
        return True

    def finish_ahead(self, ahead_id: int) -> RanAhead:
        """The task :meth:`wake_timer_ahead` woke, finished under ``ahead_id`` (not 0); raises
        as run_timer_ahead would."""
        if self._waking is None or not ahead_id:
            raise RuntimeError("no task was woken ahead on this runner")
        (time_ms, timer_id), self._waking = self._waking, None
        return self._ran_on(self.instance.finish_wake(), time_ms, ahead_id, timer_id=timer_id)

    def _may_run_ahead(self, ahead_id: int) -> bool:
        """Right after a task ran live here, or tasks ran ahead since, with nothing seen since."""
        task = self._open
        return not (task is None or task.produced is None or task.ahead_id or self._pending or self.finished
                    or len(self._aheads) >= MAX_AHEAD or not ahead_id)

    def _run_on(self, event: dict[str, Any], time_ms: int, ahead_id: int, *, activity: int = 0,
                timer_id: str = "") -> RanAhead:
        """Run the next task ahead on the one input ``event`` (its time set here)."""
        time_ms = self._ahead_time(event, time_ms, timer_id)
        produced = self.instance.activate([event], time_ms=time_ms, recorded=None)
        return self._ran_on(produced, time_ms, ahead_id, activity=activity, timer_id=timer_id)

    def _ahead_time(self, event: dict[str, Any], time_ms: int, timer_id: str) -> int:
        """:meth:`_ahead_ms`, set on the task's input ``event``."""
        event["event_time"] = time_ms = self._ahead_ms(time_ms, timer_id)
        return time_ms

    def _ahead_ms(self, time_ms: int, timer_id: str) -> int:
        """The time of the next task run ahead (never before the task it follows); the timer
        it runs on is no longer due here."""
        task = self._open
        assert task is not None
        time_ms = max(time_ms, self._aheads[-1].time_ms if self._aheads else task.time_ms)
        if timer_id:
            self._timer_due.pop(timer_id, None)
        return time_ms

    def _ran_on(self, produced: list[Command], time_ms: int, ahead_id: int, *, activity: int = 0,
                timer_id: str = "") -> RanAhead:
        """Note a task that ran ahead with ``produced`` as its commands; what history needs."""
        task = self._open
        assert task is not None
        before = self._aheads[-1] if self._aheads else None
        if self.instance.local_activities_waiting():
            # Its local activities would run in the activity worker's answer: hand the task
            # out instead (the caller evicts this runner; the task replays from history).
            raise InconsistentHistoryError("a workflow task that runs local activities is not run ahead")
        self._note_timers(produced, time_ms)  # a task run ahead: history's floor is its own time
        self._aheads = (*self._aheads, _Ahead(ahead_id, activity, time_ms, produced, timer_id))
        if before is None:
            return RanAhead(ahead_id, 0, task.scheduled_event_id, task.time_ms, time_ms, produced)
        return RanAhead(ahead_id, before.ahead_id, 0, before.time_ms, time_ms, produced)

    def _note_timers(self, produced: Sequence[Command], floor_ms: int) -> None:
        """The user timers a task that ran here started or cancelled. A timer is due at its
        call's wall-clock time (requested_time), raised to ``floor_ms`` as history clamps it,
        plus its duration: never before the fire time history records."""
        for command in produced:
            if command.command_type not in _TIMER_COMMANDS:
                continue
            if command.command_type == CommandType.START_TIMER:
                a = command.attributes
                start = max(int(a.get("requested_time") or 0), floor_ms)
                self._timer_due[str(a["timer_id"])] = start + int(a["start_to_fire_timeout_ms"])
            else:
                self._timer_due.pop(str(command.attributes["timer_id"]), None)

    def local_activities_waiting(self) -> list[LocalActivityRequest]:
        """The local activities the task that just ran live waits for (the worker runs them)."""
        task = self._open
        if task is None or task.produced is None or task.ahead_id:
            return []
        return self.instance.local_activities_waiting()

    def resolve_local_activities(self, outcomes: Sequence[LocalActivityOutcome]) -> list[Command]:
        """Hand the outcomes of :meth:`local_activities_waiting` to the task that ran live;
        returns all its commands (what the worker sends)."""
        task = self._open
        if task is None or task.produced is None:
            raise RuntimeError("no workflow task ran live here to take local activity outcomes")
        task.produced = self.instance.resolve_local_activities(outcomes)
        return task.produced

    def _see_history(self, task: _OpenTask) -> None:
        """What workflow.info() tells of the run's history in ``task``: its WorkflowTaskScheduled."""
        self.instance.history_length = task.scheduled_event_id
        self.instance.history_size = task.history_size
        self.instance.continue_as_new_suggested = task.continue_as_new_suggested
        self.instance.workflow_task_attempt = task.attempt

    def query(self, name: str, args: Sequence[Any]) -> Any:
        return self.instance.query(name, args)

    def dispose(self) -> None:
        self.instance.dispose()

    def _step(self, event: Mapping[str, Any], commands_of: Mapping[int, list[Mapping[str, Any]]]) -> None:
        kind = event["event_type"]
        attrs: Mapping[str, Any] = event.get("attributes") or {}
        event_id = int(event["event_id"])
        if kind == EventType.WORKFLOW_TASK_SCHEDULED:
            if self._open is not None:
                # No outcome was recorded for the previous task: it decided nothing.
                self._close_without_commands(self._open)
            self._open = _OpenTask(event_id, int(event["event_time"]), len(self._pending),
                                   timer_floor_ms=int(event["event_time"]),
                                   history_size=int(attrs.get("history_size_bytes") or 0),
                                   continue_as_new_suggested=bool(attrs.get("suggest_continue_as_new")),
                                   attempt=int(attrs.get("attempt") or 1))
            if self._aheads:
                ahead, self._aheads = self._aheads[0], self._aheads[1:]
                self._meet_ahead(self._open, ahead)
        elif kind == EventType.WORKFLOW_TASK_COMPLETED:
            task = self._expect_open(attrs, kind, event_id)
            recorded = commands_of.get(event_id, [])
            if task.produced is None:
                # workflow.info()'s history fields: the task's WorkflowTaskScheduled, except
                # in a task run ahead, which cannot know it and keeps its predecessor's.
                if not task.history_ran_ahead:
                    self._see_history(task)
                # The updates the task accepted were delivered to it after its input events:
                # replayed, their handlers run again from the accepted input.
                accepted = [e for e in recorded if e["event_type"] == EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
                produced = self.instance.activate(self._take_inputs(task) + accepted, time_ms=task.time_ms,
                                                  recorded=recorded)
            else:
                produced = task.produced
            _match(task.scheduled_event_id, produced, recorded)
            self._open = None
        elif kind in _TASK_ENDED_WITHOUT_OUTCOME:
            self._close_without_commands(self._expect_open(attrs, kind, event_id))
            self._open = None
            if _reset_marker(event):
                self.instance.reseed(str(attrs["new_run_id"]))  # the reset run's own draws from here
        elif kind == EventType.WORKFLOW_TASK_STARTED:
            # The task runs at the time its worker was given (Temporal's rule too); histories
            # from before that time was recorded say 0, and keep the scheduled time.
            started = int(attrs.get("started_time") or 0)
            open_task = self._open
            if open_task is not None and attrs.get("ran_ahead_id") \
                    and open_task.scheduled_event_id == int(attrs.get("scheduled_event_id", 0)):
                open_task.history_ran_ahead = True
            if open_task is not None and open_task.ahead_id and attrs.get("ran_ahead_id") != open_task.ahead_id:
                raise InconsistentHistoryError(f"workflow task {open_task.scheduled_event_id} ran ahead here, "
                                               "but history records another start")
            if started and open_task is not None \
                    and open_task.scheduled_event_id == int(attrs.get("scheduled_event_id", 0)):
                if open_task.produced is None:
                    open_task.time_ms = started
                elif open_task.time_ms != started:
                    # This copy of the task ran here at another time than the start history
                    # recorded (the task was handed out twice): what it decided is not history.
                    raise InconsistentHistoryError(
                        f"workflow task {open_task.scheduled_event_id} ran here at {open_task.time_ms},"
                        f" history started it at {started}")
        elif kind in INPUT_EVENT_TYPES:
            if self._pending:
                self._pending.append(event)
            else:
                self._pending = [event]
            if kind == EventType.TIMER_FIRED:
                self._timer_due.pop(str(attrs.get("timer_id")), None)
        elif kind in _TIMER_BOOKKEEPING:
            if kind == EventType.TIMER_STARTED:
                # History's fire time (its fold's rule); a task that ran here may have known a later one.
                start = attrs.get("start_time")
                fire_at = ((int(event["event_time"]) if start is None else int(start))
                           + int(attrs["start_to_fire_timeout_ms"]))
                timer_id = str(attrs["timer_id"])
                self._timer_due[timer_id] = max(fire_at, self._timer_due.get(timer_id, 0))
            else:
                self._timer_due.pop(str(attrs.get("timer_id")), None)
        # Everything else is bookkeeping (ActivityTaskStarted, the command events, which
        # are consumed through commands_of, terminal events).

    def _meet_ahead(self, task: _OpenTask, ahead: _Ahead) -> None:
        """The first task scheduled after a run ahead is the one that ran: it must see the
        activity result (or the timer's firing) alone, as it did here."""
        # Failed attempts that another attempt followed are inputs workflow code never sees.
        inputs = [e for e in self._pending[: task.visible_inputs]
                  if (e.get("attributes") or {}).get("retry_backoff_ms") is None
                  or e["event_type"] == EventType.ACTIVITY_TASK_COMPLETED]
        attrs = (inputs[0].get("attributes") or {}) if len(inputs) == 1 else {}
        if ahead.timer_id:
            alone = bool(inputs) and inputs[0]["event_type"] == EventType.TIMER_FIRED \
                and attrs.get("timer_id") == ahead.timer_id
            what = f"firing of timer {ahead.timer_id!r}"
        else:
            alone = bool(inputs) and inputs[0]["event_type"] == EventType.ACTIVITY_TASK_COMPLETED \
                and int(attrs.get("scheduled_event_id", 0)) == ahead.activity
            what = f"result of activity {ahead.activity}"
        if not (len(inputs) == 1 and alone):
            seen = ", ".join(f"{e['event_id']} {e['event_type']}" for e in inputs) or "none"
            raise InconsistentHistoryError(
                f"workflow task {task.scheduled_event_id} brings input events {seen}, but ran ahead here on the "
                f"{what} alone")
        self._drop_pending(task.visible_inputs)
        task.visible_inputs = 0
        task.produced = ahead.produced
        task.time_ms = task.timer_floor_ms = ahead.time_ms
        task.ahead_id = ahead.ahead_id

    def _expect_open(self, attrs: Mapping[str, Any], kind: str, event_id: int) -> _OpenTask:
        scheduled = int(attrs.get("scheduled_event_id", 0))
        if self._open is None or self._open.scheduled_event_id != scheduled:
            open_id = self._open.scheduled_event_id if self._open else None
            raise InconsistentHistoryError(
                f"event {event_id} {kind} names workflow task {scheduled}, but the open task is {open_id}"
            )
        return self._open

    def _close_without_commands(self, task: _OpenTask) -> None:
        if task.produced is not None:
            raise InconsistentHistoryError(
                f"workflow task {task.scheduled_event_id} ran here but history says it failed or timed out"
            )

    def _take_inputs(self, task: _OpenTask) -> list[Mapping[str, Any]]:
        inputs = list(self._pending[: task.visible_inputs])
        self._drop_pending(task.visible_inputs)
        return inputs

    def _drop_pending(self, count: int) -> None:
        """The first ``count`` pending input events are taken."""
        pending = self._pending
        if count >= len(pending):
            self._pending = ()
        elif isinstance(pending, list):
            del pending[:count]


def _commands_by_completion(events: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    found: dict[int, list[Mapping[str, Any]]] = {}
    for event in events:
        if event["event_type"] in _COMMAND_EVENTS:
            completed = int((event.get("attributes") or {}).get("workflow_task_completed_event_id", 0))
            found.setdefault(completed, []).append(event)
    return found


def _match(scheduled_event_id: int, produced: Sequence[Command], recorded: Sequence[Mapping[str, Any]]) -> None:
    """Check the task's commands against its recorded events and bind them to event ids."""
    where = f"workflow task {scheduled_event_id}"
    produced = [c for c in produced if c.command_type not in _EVENTLESS_COMMANDS]
    recorded = _without_deprecated_patches(produced, recorded)
    for i in range(max(len(produced), len(recorded))):
        command = produced[i] if i < len(produced) else None
        event = recorded[i] if i < len(recorded) else None
        if command is None:
            assert event is not None
            raise NonDeterminismError(
                f"non-determinism in {where}: history has event {event['event_id']} "
                f"{_describe_event(event)}, but the workflow code produced no command for it"
            )
        if event is None:
            raise NonDeterminismError(
                f"non-determinism in {where}: the workflow code produced command {_describe_command(command)}, "
                f"but history records only {len(recorded)} command event(s) for this task"
            )
        if not _matches(command, event):
            raise NonDeterminismError(
                f"non-determinism in {where}: history has event {event['event_id']} {_describe_event(event)}, "
                f"but the workflow code produced command {_describe_command(command)}"
            )
        if command.on_recorded is not None:
            command.on_recorded(int(event["event_id"]))


def _without_deprecated_patches(produced: Sequence[Command],
                                recorded: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """``recorded`` without the markers of deprecated patches the code no longer asks about
    (``workflow.deprecate_patch`` recorded them; code that dropped the call replays past them,
    as Temporal's does). A patch marker not deprecated still has to be matched."""
    asked = {c.attributes.get("marker_name") for c in produced if c.command_type == CommandType.RECORD_MARKER}
    kept = [e for e in recorded if not (_deprecated_patch(e) and (e.get("attributes") or {}).get("marker_name")
                                        not in asked)]
    return kept if len(kept) != len(recorded) else recorded


def _deprecated_patch(event: Mapping[str, Any]) -> bool:
    attrs = event.get("attributes") or {}
    if event["event_type"] != EventType.MARKER_RECORDED \
            or not str(attrs.get("marker_name") or "").startswith(PATCH_MARKER_PREFIX):
        return False
    try:
        details = json.loads(attrs.get("details") or "null")
    except (TypeError, ValueError):
        return False
    return isinstance(details, dict) and details.get("deprecated") is True


def _reset_marker(event: Mapping[str, Any]) -> bool:
    """The WorkflowTaskFailed a reset writes after the events it copied (it names both runs)."""
    attrs = event.get("attributes") or {}
    return event["event_type"] == "WorkflowTaskFailed" and bool(attrs.get("base_run_id") and attrs.get("new_run_id"))


def _matches(command: Command, event: Mapping[str, Any]) -> bool:
    if COMMAND_EVENT_TYPE.get(command.command_type) != event["event_type"]:
        return False
    key = _IDENTITY_ATTRIBUTE.get(command.command_type)
    if key is None:
        return True
    return bool(command.attributes.get(key) == (event.get("attributes") or {}).get(key))


def _describe_command(command: Command) -> str:
    key = _IDENTITY_ATTRIBUTE.get(command.command_type)
    inner = f"{key}={command.attributes.get(key)!r}" if key else ""
    return f"{command.command_type}({inner})"


def _describe_event(event: Mapping[str, Any]) -> str:
    kind = str(event["event_type"])
    command_type = next((c for c, e in COMMAND_EVENT_TYPE.items() if e == kind), None)
    key = _IDENTITY_ATTRIBUTE.get(command_type or "")
    inner = f"{key}={(event.get('attributes') or {}).get(key)!r}" if key else ""
    return f"{kind}({inner})"
