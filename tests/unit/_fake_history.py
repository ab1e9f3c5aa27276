"""A tiny in-memory stand-in for the history service, for driving workflow code in tests.

It appends events the way docs/protocol.md describes (one event per command after the
task's WorkflowTaskCompleted) so tests can build realistic histories step by step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.runner import COMMAND_EVENT_TYPE, WorkflowRunner

START_MS = 1_700_000_000_000


class FakeHistory:
    """One workflow run's history, grown by hand and by the commands of workflow tasks."""

    def __init__(self, workflow_type: str, *args: Any, task_queue: str = "tq", run_id: str = "run-1") -> None:
        self.events: list[dict[str, Any]] = []
        self.time_ms = START_MS
        self.run_id = run_id
        self.task_queue = task_queue
        self.first_event_id = 1  # first event of the next workflow task handed out
        self.update_requests: dict[str, tuple[str, str]] = {}  # waiting: update id -> (name, input)
        self.add(
            "WorkflowExecutionStarted",
            workflow_type=workflow_type,
            task_queue=task_queue,
            input=json.dumps(list(args)),
            execution_timeout_ms=0,
            workflow_task_timeout_ms=10000,
            attempt=1,
            continued_execution_run_id=None,
        )
        self.open_task: int | None = None
        self.schedule_task()

    def add(self, event_type: str, **attributes: Any) -> int:
        self.time_ms += 1000
        event_id = len(self.events) + 1
        self.events.append(
            {"event_id": event_id, "event_time": self.time_ms, "event_type": event_type, "attributes": attributes}
        )
        return event_id

    def schedule_task(self) -> int:
        self.open_task = self.add("WorkflowTaskScheduled", task_queue=self.task_queue, start_to_close_timeout_ms=10000)
        return self.open_task

    def task_events(self) -> list[dict[str, Any]]:
        """The events the next poll would hand out (first_event_id..scheduled_event_id)."""
        assert self.open_task is not None
        events = self.events[self.first_event_id - 1 : self.open_task]
        self.first_event_id = self.open_task + 1
        return events

    def start_task(self) -> int:
        assert self.open_task is not None
        return self.add("WorkflowTaskStarted", scheduled_event_id=self.open_task)

    def complete_task(self, commands: Sequence[Mapping[str, Any]], started: int | None = None) -> int:
        """Record the open task's completion and one event per command."""
        assert self.open_task is not None
        if started is None:
            started = self.start_task()
        completed = self.add("WorkflowTaskCompleted", scheduled_event_id=self.open_task, started_event_id=started)
        self.open_task = None
        for command in commands:
            attrs = dict(command["attributes"])
            if command["command_type"] == "RejectWorkflowUpdate":
                self.update_requests.pop(attrs["update_id"])
                continue  # a rejection leaves no event
            event_type = COMMAND_EVENT_TYPE[command["command_type"]]
            if event_type == "WorkflowExecutionUpdateAccepted":
                name, input_ = self.update_requests.pop(attrs["update_id"])
                attrs.update(update_name=name, input=input_, identity="")
            if event_type == "WorkflowExecutionUpdateCompleted":
                attrs["accepted_event_id"] = next(
                    e["event_id"] for e in self.events if e["event_type"] == "WorkflowExecutionUpdateAccepted"
                    and e["attributes"]["update_id"] == attrs["update_id"])
            if event_type == "TimerStarted":  # history records the call's time it counts from
                attrs["start_time"] = attrs.pop("requested_time", None)
            if event_type == "TimerCanceled":
                attrs["started_event_id"] = self.timer_started_id(attrs["timer_id"])
            if event_type == "WorkflowExecutionContinuedAsNew":
                attrs["new_run_id"] = "run-next"
            self.add(event_type, workflow_task_completed_event_id=completed, **attrs)
        return completed

    def fail_task(self, cause: str = "WorkflowError") -> int:
        assert self.open_task is not None
        started = self.start_task()
        event_id = self.add(
            "WorkflowTaskFailed", scheduled_event_id=self.open_task, started_event_id=started, cause=cause, failure=None
        )
        self.open_task = None
        return event_id

    def activity_scheduled_id(self, activity_id: str) -> int:
        for event in self.events:
            if event["event_type"] == "ActivityTaskScheduled" and event["attributes"]["activity_id"] == activity_id:
                return int(event["event_id"])
        raise KeyError(activity_id)

    def timer_started_id(self, timer_id: str) -> int:
        for event in self.events:
            if event["event_type"] == "TimerStarted" and event["attributes"]["timer_id"] == timer_id:
                return int(event["event_id"])
        raise KeyError(timer_id)

    def complete_activity(self, activity_id: str, result: Any) -> None:
        scheduled = self.activity_scheduled_id(activity_id)
        started = self.add("ActivityTaskStarted", scheduled_event_id=scheduled, attempt=1)
        self.add("ActivityTaskCompleted", scheduled_event_id=scheduled, started_event_id=started, result=json.dumps(result))

    def fail_activity(self, activity_id: str, message: str, *, retry_backoff_ms: int | None, type: str = "ValueError") -> None:
        scheduled = self.activity_scheduled_id(activity_id)
        started = self.add("ActivityTaskStarted", scheduled_event_id=scheduled, attempt=1)
        failure = {"message": message, "type": type, "stack_trace": "", "non_retryable": False, "details": None}
        self.add(
            "ActivityTaskFailed",
            scheduled_event_id=scheduled,
            started_event_id=started,
            failure=failure,
            retry_backoff_ms=retry_backoff_ms,
        )

    def fire_timer(self, timer_id: str) -> None:
        self.add("TimerFired", timer_id=timer_id, started_event_id=self.timer_started_id(timer_id))

    def request_update(self, update_id: str, name: str, *args: Any) -> None:
        """An update request waiting for the next task (kept out of history, as history does)."""
        self.update_requests[update_id] = (name, json.dumps(list(args)))

    def waiting_updates(self) -> list[dict[str, Any]]:
        """What a poll hands out with a task: the requests waiting."""
        return [{"update_id": uid, "name": name, "input": input_}
                for uid, (name, input_) in self.update_requests.items()]

    def signal(self, name: str, *args: Any) -> None:
        self.add("WorkflowExecutionSignaled", signal_name=name, input=json.dumps(list(args)))


class Driver:
    """Plays the worker: applies each task's new events to one cached runner."""

    def __init__(self, workflow: type, history: FakeHistory) -> None:
        self.definition = WorkflowDefinition.of(workflow)
        self.history = history
        self.runner = new_runner(workflow, history)

    def step(self) -> list[dict[str, Any]]:
        """Hand out the open task, run it, record its commands; returns the commands."""
        commands = [c.to_json() for c in self.runner.apply(self.history.task_events(),
                                                          updates=self.history.waiting_updates())]
        self.history.complete_task(commands)
        return commands

    def next_task(self) -> list[dict[str, Any]]:
        """Schedule a new workflow task (as history does after an input) and run it."""
        self.history.schedule_task()
        return self.step()


def new_runner(workflow: type, history: FakeHistory) -> WorkflowRunner:
    return WorkflowRunner(
        WorkflowDefinition.of(workflow), namespace="default", workflow_id="wf-1", run_id=history.run_id
    )
