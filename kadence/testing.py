"""A testing kit for users: run activities in isolation, and workflows in memory with time skipping.

:class:`ActivityEnvironment` runs one activity function as a worker would (``activity.info()``,
heartbeats, cancellation), without a server.

:class:`WorkflowEnvironment` runs workflows against an in-memory stand-in for the server:
the SDK's own workflow and activity task processors (the code a :class:`~kadence.Worker`
runs) are driven directly, with the history kept in memory, so no broker and no database
are needed. Its clock skips ahead: whenever a test waits for a result (or calls
:meth:`WorkflowEnvironment.sleep`) and nothing is running (no workflow task to hand out, no
activity attempt in progress), time jumps to the next timer, so a workflow that sleeps 30
days finishes in milliseconds.

Memo (``start_workflow(..., memo=...)``, ``workflow.memo()``, ``handle.describe()``) and
updates (``handle.execute_update`` / ``start_update``: validator, accept, complete, a
rejection that leaves no event, one run per update id) behave as on the server; local
activities run in the workflow task, as a worker runs them.

What it does not do, by design: durability, several workers, workflow task retries (a
failing workflow task is reported at once by ``result()`` as a
:class:`~kadence.exceptions.WorkflowTaskError`), schedule-to-start, schedule-to-close and
heartbeat timeouts of activities (start-to-close is enforced, with the server's retry
rule). Test those against a real cluster (``kadence dev``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from kadence._activity import ActivityContext, ActivityDefinition, ActivityInfo, set_context
from kadence._retry_rule import retry_backoff
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence._worker.workflow_tasks import WorkflowTaskProcessor
from kadence._workflow.definition import (
    WorkflowDefinition,
    query_name_of,
    run_result_type,
    signal_name_of,
    update_name_of,
    workflow_name_of,
)
from kadence.common import RetryPolicy, to_millis
from kadence.converter import DataConverter, decode_payload, default_converter, encode_payload, signature_of
from kadence.exceptions import (
    QueryFailedError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowTaskError,
    WorkflowUpdateFailedError,
)
from kadence.interceptor import Interceptor
from kadence_protocol.enums import CommandType, EventType, TimeoutType

__all__ = ["ActivityEnvironment", "WorkflowEnvironment", "WorkflowEnvironmentHandle", "WorkflowEnvironmentUpdateHandle",
           "retry_backoff"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# -- activities in isolation ---------------------------------------------------------------


class ActivityEnvironment:
    """Runs activity functions in isolation, as a worker would.

    ``activity.info()`` returns :attr:`info` (override fields with ``info=``), every
    ``activity.heartbeat(...)`` is appended to :attr:`heartbeats`, and :meth:`cancel` asks
    the activity to stop as the server's answer to a heartbeat does: ``is_cancel_requested()``
    turns true and an async activity is cancelled (``CancelledError`` at its next await),
    which :meth:`run` lets through. Arguments and the result go through the data converter
    by the function's type hints, so a type that does not convert fails here too.
    """

    def __init__(self, *, info: ActivityInfo | None = None, data_converter: DataConverter | None = None) -> None:
        now = datetime.now(tz=UTC)
        self.info = info or ActivityInfo(
            activity_id="test-activity", activity_type="", attempt=1, namespace="default",
            workflow_id="test-workflow", run_id="test-run", workflow_type="Test", task_queue="test",
            task_token="test-token", scheduled_event_id=5, heartbeat_details=(), scheduled_time=now,
            started_time=now, schedule_to_close_timeout=None, start_to_close_timeout=None, heartbeat_timeout=None)
        self.converter = data_converter or default_converter()
        self.heartbeats: list[tuple[Any, ...]] = []
        #: Called with each heartbeat's details (from the activity's thread for a sync activity).
        self.on_heartbeat: Callable[[tuple[Any, ...]], None] | None = None
        self._context: ActivityContext | None = None
        self._task: asyncio.Task[Any] | None = None  # an async activity's (a thread cannot be cancelled)
        self._loop: asyncio.AbstractEventLoop | None = None

    def cancel(self) -> None:
        """Request cancellation of the running activity (thread-safe)."""
        context, task, loop = self._context, self._task, self._loop
        if context is None:
            raise RuntimeError("no activity is running in this environment")
        context.cancel_requested = True
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(task.cancel)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` (an ``@activity.defn`` function) with ``args``; returns its result."""
        definition = ActivityDefinition.of(fn)
        what = f"activity {definition.name}"
        signature = signature_of(fn)
        converted = self.converter.decode_args(self.converter.encode_args(args, what=what),
                                               signature.param_hints(len(args)), what=what)

        def beat(details: tuple[Any, ...]) -> None:
            self.converter.encode_args(details, what="activity.heartbeat")  # the worker refuses these too
            self.heartbeats.append(details)
            if self.on_heartbeat is not None:
                self.on_heartbeat(details)

        info = self.info if self.info.activity_type else replace(self.info, activity_type=definition.name)
        context = ActivityContext(info, beat)
        loop = asyncio.get_running_loop()
        self._context, self._loop = context, loop

        async def attempt() -> Any:
            set_context(context)  # this task's own context
            if definition.is_async:
                return await definition.fn(*converted)
            copied = contextvars.copy_context()
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kadence-test-activity")
            try:
                return await loop.run_in_executor(pool, functools.partial(copied.run, definition.fn, *converted))
            finally:
                pool.shutdown(wait=False)

        task = loop.create_task(attempt())
        self._task = task if definition.is_async else None
        try:
            result = await task
        finally:
            self._task = None
            self._context = None
        text = self.converter.encode_value(result, what=f"result of {what}")
        return self.converter.decode_value(text, signature.result, what=f"result of {what}")


# -- workflows in memory -------------------------------------------------------------------


@dataclass
class _Activity:
    run: _Run
    scheduled_event_id: int
    attrs: Mapping[str, Any]
    first_scheduled_ms: int
    attempt: int = 1
    token: str = ""
    task: asyncio.Task[None] | None = None
    answered: bool = False
    heartbeat_details: str | None = None
    last_failure: Mapping[str, Any] | None = None  # of the attempt before this one
    started_ms: int = 0


@dataclass
class _Run:
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    events: list[dict[str, Any]] = field(default_factory=list)
    handed: int = 0  # the last event id handed out with a workflow task
    open_task: int | None = None  # scheduled event id of the task not yet answered
    task_handed: bool = False
    task_token: str = ""
    started_event_id: int = 0
    inputs_waiting: bool = False  # inputs arrived after the open task was scheduled
    status: str = "Running"
    result: str | None = None
    failure: Mapping[str, Any] | None = None
    task_failure: Mapping[str, Any] | None = None
    new_run_id: str | None = None
    activities: dict[int, _Activity] = field(default_factory=dict)
    timers: dict[str, int] = field(default_factory=dict)  # timer id -> started event id
    memo: str | None = None  # as WorkflowExecutionStarted holds it (through the codec)
    updates: dict[str, _Update] = field(default_factory=dict)  # by update id, in the order asked
    # The workflow retry policy (as history's retry.py): the policy (a RetryPolicy record),
    # this run's attempt, the chain's expiration (0: none) and a retry's backoff in progress.
    retry_policy: Mapping[str, Any] | None = None
    attempt: int = 1
    expiration_ms: int = 0
    backing_off: bool = False


@dataclass
class _Update:
    """An update request and its outcome, as history's updates.py keeps them."""

    update_id: str
    name: str
    input: str | None
    stage: str = "requested"  # accepted, completed, rejected; "closed": the run closed first
    accepted_event_id: int = 0
    result: str | None = None
    failure: Mapping[str, Any] | None = None


class WorkflowEnvironment:
    """Workflows and activities run in this process against an in-memory history, with a
    clock that skips ahead (see the module docstring). Use as ``async with``::

        async with WorkflowEnvironment(workflows=[Reminder], activities=[send]) as env:
            assert await env.execute_workflow(Reminder.run, "hi", id="r-1") == "sent"
            assert env.now() - start >= timedelta(days=30)
    """

    def __init__(self, *, workflows: Iterable[type] = (), activities: Iterable[Callable[..., Any]] = (),
                 task_queue: str = "test", namespace: str = "default", data_converter: DataConverter | None = None,
                 start_time: datetime = _EPOCH, interceptors: Sequence[Interceptor] = ()) -> None:
        """``interceptors``: the workflow and activity interceptors a Worker would run
        (kadence.interceptor; the client and task chains have no place here)."""
        self.task_queue = task_queue
        self.namespace = namespace
        self.converter = data_converter or default_converter()
        self._codec = self.converter.payload_codec
        self._workflow_defs = [WorkflowDefinition.of(w) for w in workflows]
        self._activity_defs = [ActivityDefinition.of(a) for a in activities]
        self._start_ms = int(start_time.timestamp() * 1000)
        self._skipped_ms = 0
        self._t0 = 0.0
        self._runs: dict[str, _Run] = {}
        self._current: dict[str, str] = {}  # workflow id -> latest run id
        self._tokens: dict[str, _Run | _Activity] = {}
        self._queries: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._timers: dict[tuple[str, str, str], tuple[int, Callable[[], None]]] = {}
        self._awaited: list[str] = []  # run ids a caller waits for the result of: time may skip
        self._sleep_targets: list[int] = []
        self._wake = asyncio.Event()  # for the driver: something to do
        self._tick = asyncio.Event()  # for waiters: an event was added or time skipped
        self._ids = itertools.count(1)
        self._driver: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="kadence-test")
        self._workflows = WorkflowTaskProcessor(self, namespace=namespace, workflows=self._workflow_defs,
                                                identity="test-worker", data_converter=self.converter,
                                                activities=self._activity_defs, activity_executor=self._executor,
                                                interceptors=interceptors)
        self._activities = ActivityTaskProcessor(self, namespace=namespace, task_queue=task_queue,
                                                 activities=self._activity_defs, identity="test-worker",
                                                 executor=self._executor, data_converter=self.converter,
                                                 interceptors=interceptors)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowEnvironment:
        self._t0 = asyncio.get_running_loop().time()
        self._driver = asyncio.get_running_loop().create_task(self._drive(), name="kadence-test-environment")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the environment: running activities are cancelled."""
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
            self._driver = None
        running = [a.task for r in self._runs.values() for a in r.activities.values() if a.task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the clock -------------------------------------------------------------------

    def _now_ms(self) -> int:
        elapsed = asyncio.get_running_loop().time() - self._t0
        return self._start_ms + int(elapsed * 1000) + self._skipped_ms

    def now(self) -> datetime:
        """The environment's time: real time since the start plus everything skipped."""
        return datetime.fromtimestamp(self._now_ms() / 1000, tz=UTC)

    async def sleep(self, duration: float | timedelta) -> None:
        """Let ``duration`` of environment time pass, skipping ahead when nothing runs
        (timers due meanwhile fire, in order)."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        target = self._now_ms() + max(0, round(seconds * 1000))
        self._sleep_targets.append(target)
        self._wake.set()
        try:
            while self._now_ms() < target:
                self._check_driver()
                await self._wait_changed(self._tick, timeout=(target - self._now_ms()) / 1000)
        finally:
            self._sleep_targets.remove(target)

    # -- the client side ---------------------------------------------------------------

    async def start_workflow(self, workflow: str | type | Callable[..., Any], *args: Any, id: str,
                             task_queue: str | None = None, execution_timeout: timedelta | None = None,
                             memo: Mapping[str, Any] | None = None,
                             retry_policy: RetryPolicy | None = None) -> WorkflowEnvironmentHandle:
        """Start a workflow (WorkflowAlreadyStartedError if one with this id is running).
        ``memo`` is kept with the run as the server keeps it (``workflow.memo()``,
        ``handle.describe()``, carried over on continue-as-new). ``retry_policy``: a failed
        run is retried as a new run after the backoff (time skips it), as the server does."""
        self._check_driver()
        workflow_type = workflow_name_of(workflow)
        current = self._runs.get(self._current.get(id, ""))
        if current is not None and current.status == "Running":
            raise WorkflowAlreadyStartedError(409, "WorkflowAlreadyStarted", f"workflow {id} is already running")
        text = self.converter.encode_args(args, what=f"workflow {workflow_type}")
        memo_payload = None if memo is None else await encode_payload(
            self._codec, self.converter.encode_value(dict(memo), what="memo"))
        run = self._new_run(id, workflow_type, task_queue or self.task_queue,
                            await encode_payload(self._codec, text, args=True), to_millis(execution_timeout), None,
                            memo=memo_payload, retry_policy=retry_policy.to_avro() if retry_policy else None)
        return WorkflowEnvironmentHandle(self, id, run.run_id, run_result_type(workflow))

    async def execute_workflow(self, workflow: str | type | Callable[..., Any], *args: Any, id: str,
                               task_queue: str | None = None, execution_timeout: timedelta | None = None,
                               memo: Mapping[str, Any] | None = None, retry_policy: RetryPolicy | None = None) -> Any:
        """Start a workflow and return its result (time skips while waiting)."""
        handle = await self.start_workflow(workflow, *args, id=id, task_queue=task_queue,
                                           execution_timeout=execution_timeout, memo=memo, retry_policy=retry_policy)
        return await handle.result()

    def get_workflow_handle(self, workflow_id: str, *, result_type: Any = None) -> WorkflowEnvironmentHandle:
        run_id = self._current.get(workflow_id)
        if run_id is None:
            raise WorkflowNotFoundError(404, "WorkflowNotFound", f"workflow {workflow_id} not found")
        return WorkflowEnvironmentHandle(self, workflow_id, run_id, result_type)

    def _run(self, run_id: str) -> _Run:
        return self._runs[run_id]

    # -- runs and their events ---------------------------------------------------------

    def _new_run(self, workflow_id: str, workflow_type: str, task_queue: str, input_: str | None,
                 execution_timeout_ms: int, continued_from: str | None, *, memo: str | None = None,
                 retry_policy: Mapping[str, Any] | None = None, attempt: int = 1, backoff_ms: int = 0,
                 expiration_ms: int = 0, run_id: str | None = None) -> _Run:
        run = _Run(workflow_id, run_id or str(uuid.uuid4()), workflow_type, task_queue, memo=memo,
                   retry_policy=retry_policy, attempt=attempt)
        self._runs[run.run_id] = run
        self._current[workflow_id] = run.run_id
        self._add(run, EventType.WORKFLOW_EXECUTION_STARTED, workflow_type=workflow_type, task_queue=task_queue,
                  input=input_,
                  execution_timeout_ms=execution_timeout_ms, workflow_task_timeout_ms=10_000, attempt=attempt,
                  continued_execution_run_id=continued_from, memo=memo, retry_policy=retry_policy,
                  first_workflow_task_backoff_ms=backoff_ms)
        run.expiration_ms = expiration_ms or (self._now_ms() + execution_timeout_ms if execution_timeout_ms else 0)
        if run.expiration_ms:
            self._set_timer((run.run_id, "execution", ""), run.expiration_ms,
                            lambda: self._close(run, "TimedOut", EventType.WORKFLOW_EXECUTION_TIMED_OUT))
        if backoff_ms:
            run.backing_off = True
            self._set_timer((run.run_id, "backoff", ""), self._now_ms() + backoff_ms, lambda: self._backoff_over(run))
        else:
            self._schedule_task(run)
        return run

    def _backoff_over(self, run: _Run) -> None:
        if run.status == "Running" and run.backing_off:
            run.backing_off = False
            self._schedule_task(run)

    def _fail(self, run: _Run, attrs: Mapping[str, Any], tag: Mapping[str, Any]) -> None:
        """FailWorkflowExecution: the run fails, retried as a new run if its policy says so."""
        failure = attrs.get("failure") or {}
        backoff = None if run.retry_policy is None else retry_backoff(
            run.retry_policy, run.attempt, self._now_ms(), 0, run.expiration_ms, str(failure.get("type") or ""),
            bool(failure.get("non_retryable")))
        new_run_id = None if backoff is None else str(uuid.uuid4())
        run.failure = attrs.get("failure")
        run.new_run_id = new_run_id
        self._close(run, "Failed", EventType.WORKFLOW_EXECUTION_FAILED, **attrs, **tag, new_run_id=new_run_id)
        if backoff is not None:
            first = run.events[0]["attributes"]
            self._new_run(run.workflow_id, run.workflow_type, run.task_queue, first.get("input"),
                          int(first.get("execution_timeout_ms") or 0), run.run_id, memo=run.memo,
                          retry_policy=run.retry_policy, attempt=run.attempt + 1, backoff_ms=backoff,
                          expiration_ms=run.expiration_ms, run_id=new_run_id)

    def _add(self, run: _Run, event_type: str, **attributes: Any) -> int:
        event_id = len(run.events) + 1
        run.events.append({"event_id": event_id, "event_time": self._now_ms(), "event_type": event_type,
                           "attributes": attributes})
        self._tick.set()
        self._wake.set()
        return event_id

    def _input(self, run: _Run, event_type: str, **attributes: Any) -> None:
        """An event workflow code reacts to: it gets a workflow task."""
        if run.status != "Running":
            return
        self._add(run, event_type, **attributes)
        if run.open_task is None and not run.backing_off:  # a retry's backoff: its timer schedules the task
            self._schedule_task(run)
        else:
            run.inputs_waiting = True

    def _schedule_task(self, run: _Run) -> None:
        run.open_task = self._add(run, EventType.WORKFLOW_TASK_SCHEDULED, task_queue=run.task_queue,
                                  start_to_close_timeout_ms=10_000)
        run.task_handed = False
        run.inputs_waiting = False

    def _close(self, run: _Run, status: str, event_type: str, **attributes: Any) -> None:
        if run.status != "Running":
            return
        self._add(run, event_type, **attributes)
        run.status = status
        for key in [k for k in self._timers if k[0] == run.run_id]:
            del self._timers[key]
        for act in run.activities.values():
            if act.task is not None:
                act.task.cancel()
        run.activities.clear()
        for update in run.updates.values():
            if update.stage in ("requested", "accepted"):
                update.stage = "closed"

    # -- timers and the driver -----------------------------------------------------------

    def _set_timer(self, key: tuple[str, str, str], fire_ms: int, fire: Callable[[], None]) -> None:
        self._timers[key] = (fire_ms, fire)
        self._wake.set()

    def _may_skip(self, now: int) -> bool:
        """Time skips while a caller waits: in sleep() (until the first sleeper's end has
        come and it has run) or for the result of a run that is still open."""
        if any(t <= now for t in self._sleep_targets):
            return False
        return bool(self._sleep_targets) or any(
            self._runs[r].status == "Running" and self._runs[r].task_failure is None for r in self._awaited)

    def _busy(self) -> bool:
        return any(r.open_task is not None and not r.task_handed and r.task_failure is None
                   for r in self._runs.values()) or \
            any(a.task is not None and not a.task.done() for r in self._runs.values() for a in r.activities.values())

    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            now = self._now_ms()
            due = sorted((fire_ms, key) for key, (fire_ms, _) in self._timers.items() if fire_ms <= now)
            for _, key in due:
                entry = self._timers.pop(key, None)
                if entry is not None:
                    entry[1]()
            handed = False
            for run in list(self._runs.values()):
                if run.open_task is not None and not run.task_handed and run.task_failure is None:
                    await self._hand_out(run)
                    handed = True
            if due or handed:
                continue
            next_fire = min((fire_ms for fire_ms, _ in self._timers.values()), default=None)
            ahead = [t for t in (next_fire, *self._sleep_targets) if t is not None and t > now]
            if ahead and self._may_skip(now) and not self._busy():
                # Nothing can happen before the next timer (or the end of a sleep): skip there.
                self._skipped_ms += min(ahead) - now
                self._tick.set()
                continue
            wait = None if next_fire is None else max(0.0, (next_fire - now) / 1000)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _check_driver(self) -> None:
        if self._driver is None:
            raise RuntimeError("use the environment as `async with WorkflowEnvironment(...) as env:`")
        if self._driver.done():
            self._driver.result()  # raises what stopped it
            raise RuntimeError("the environment has stopped")

    async def _wait_changed(self, event: asyncio.Event, timeout: float | None = None) -> None:
        """Wait for ``event`` (cleared first), the driver's end, or ``timeout``."""
        event.clear()
        driver = self._driver
        assert driver is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([waiter, driver], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # -- workflow tasks ------------------------------------------------------------------

    async def _hand_out(self, run: _Run) -> None:
        assert run.open_task is not None
        scheduled = run.open_task
        events = run.events[run.handed:scheduled]
        run.handed = scheduled
        run.task_handed = True
        started_time = self._now_ms()
        run.started_event_id = self._add(run, EventType.WORKFLOW_TASK_STARTED, scheduled_event_id=scheduled,
                                         identity="test-worker", started_time=started_time, ran_ahead_id=None)
        run.task_token = token = f"wt-{next(self._ids)}"
        self._tokens[token] = run
        await self._workflows.process({
            "task_token": token, "workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "scheduled_event_id": scheduled, "attempt": 1,
            "started_time": started_time, "events": events,
            "updates": [{"update_id": u.update_id, "name": u.name, "input": u.input}
                        for u in self._updates_waiting(run)],
        })

    def _complete_task(self, run: _Run, commands: Sequence[Mapping[str, Any]]) -> None:
        scheduled = run.open_task
        completed = self._add(run, EventType.WORKFLOW_TASK_COMPLETED, scheduled_event_id=scheduled,
                              started_event_id=run.started_event_id, identity="test-worker")
        run.open_task = None
        for command in commands:
            if run.status != "Running":
                break
            self._command(run, completed, str(command["command_type"]), dict(command.get("attributes") or {}))
        if run.status == "Running" and (run.inputs_waiting or self._updates_waiting(run)):
            self._schedule_task(run)

    @staticmethod
    def _updates_waiting(run: _Run) -> list[_Update]:
        return [u for u in run.updates.values() if u.stage == "requested"]

    def _command(self, run: _Run, completed: int, kind: str, attrs: dict[str, Any]) -> None:
        tag = {"workflow_task_completed_event_id": completed}
        if kind == CommandType.SCHEDULE_ACTIVITY_TASK:
            sid = self._add(run, EventType.ACTIVITY_TASK_SCHEDULED, **attrs, **tag)
            act = _Activity(run, sid, attrs, self._now_ms())
            run.activities[sid] = act
            self._start_attempt(act)
        elif kind == CommandType.START_TIMER:
            # The SDK's requested_time is a wall-clock reading, and this clock skips: timers
            # count from when they are recorded here (TimerStarted's start_time left null).
            attrs.pop("requested_time", None)
            sid = self._add(run, EventType.TIMER_STARTED, **attrs, **tag)
            timer_id = str(attrs["timer_id"])
            run.timers[timer_id] = sid
            self._set_timer((run.run_id, "timer", timer_id), self._now_ms() + int(attrs["start_to_fire_timeout_ms"]),
                            lambda: self._fire_timer(run, timer_id))
        elif kind == CommandType.CANCEL_TIMER:
            timer_id = str(attrs["timer_id"])
            self._add(run, EventType.TIMER_CANCELED, **attrs, started_event_id=run.timers.pop(timer_id, 0), **tag)
            self._timers.pop((run.run_id, "timer", timer_id), None)
        elif kind == CommandType.RECORD_MARKER:
            self._add(run, EventType.MARKER_RECORDED, **attrs, **tag)
        elif kind == CommandType.COMPLETE_WORKFLOW_EXECUTION:
            run.result = attrs.get("result")
            self._close(run, "Completed", EventType.WORKFLOW_EXECUTION_COMPLETED, **attrs, **tag)
        elif kind == CommandType.FAIL_WORKFLOW_EXECUTION:
            self._fail(run, attrs, tag)
        elif kind == CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION:
            new_run_id = str(uuid.uuid4())
            self._close(run, "ContinuedAsNew", EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW, **attrs,
                        new_run_id=new_run_id,
                        **tag)
            new = self._new_run(run.workflow_id, str(attrs.get("workflow_type") or run.workflow_type),
                                str(attrs.get("task_queue") or run.task_queue), attrs.get("input"), 0, run.run_id,
                                memo=attrs["memo"] if "memo" in attrs else run.memo,
                                retry_policy=run.retry_policy)  # the policy carries on, from attempt 1
            # The new run takes the id the event announced.
            del self._runs[new.run_id]
            new.run_id = new_run_id
            self._runs[new_run_id] = new
            self._current[run.workflow_id] = new_run_id
            run.new_run_id = new_run_id
        elif kind == "AcceptWorkflowUpdate":
            update = run.updates[str(attrs["update_id"])]
            update.accepted_event_id = self._add(run, "WorkflowExecutionUpdateAccepted", update_id=update.update_id,
                                                 update_name=update.name, input=update.input,
                                                 identity="test-client", **tag)
            update.stage = "accepted"
        elif kind == "RejectWorkflowUpdate":
            # No event: the caller alone learns of it.
            update = run.updates[str(attrs["update_id"])]
            update.stage, update.failure = "rejected", attrs.get("failure") or {}
            self._tick.set()
        elif kind == "CompleteWorkflowUpdate":
            update = run.updates[str(attrs["update_id"])]
            self._add(run, "WorkflowExecutionUpdateCompleted", update_id=update.update_id,
                      accepted_event_id=update.accepted_event_id, result=attrs.get("result"),
                      failure=attrs.get("failure"), **tag)
            update.stage, update.result, update.failure = "completed", attrs.get("result"), attrs.get("failure")
        else:
            raise WorkflowTaskError(f"the test environment does not support command {kind}")

    def _fire_timer(self, run: _Run, timer_id: str) -> None:
        started = run.timers.pop(timer_id, None)
        if started is not None:
            self._input(run, EventType.TIMER_FIRED, timer_id=timer_id, started_event_id=started)

    # -- activity tasks --------------------------------------------------------------------

    def _start_attempt(self, act: _Activity) -> None:
        run = act.run
        act.token = token = f"at-{next(self._ids)}"
        act.answered = False
        act.started_ms = self._now_ms()
        self._tokens[token] = act
        a = act.attrs
        task = {
            "task_token": token, "workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "activity_id": a.get("activity_id"),
            "activity_type": a.get("activity_type"), "input": a.get("input"), "attempt": act.attempt,
            "scheduled_event_id": act.scheduled_event_id,
            "schedule_to_close_timeout_ms": a.get("schedule_to_close_timeout_ms"),
            "start_to_close_timeout_ms": a.get("start_to_close_timeout_ms"),
            "heartbeat_timeout_ms": a.get("heartbeat_timeout_ms"), "heartbeat_details": act.heartbeat_details,
            "scheduled_time": act.first_scheduled_ms,
        }

        async def attempt() -> None:
            await self._activities.process(task)
            if not act.answered and run.activities.get(act.scheduled_event_id) is act:
                # The worker answers nothing when the start-to-close timeout passes: the
                # server times the attempt out, so this stand-in does.
                self._timed_out(act)

        act.task = asyncio.get_running_loop().create_task(attempt(), name=f"kadence-test-activity-{token}")
        act.task.add_done_callback(lambda _: self._wake.set())

    def _backoff(self, act: _Activity, error_type: str, non_retryable: bool) -> int | None:
        a = act.attrs
        return retry_backoff(a.get("retry_policy"), act.attempt, self._now_ms(), act.first_scheduled_ms,
                             int(a.get("schedule_to_close_timeout_ms") or 0), error_type, non_retryable)

    def _after_attempt(self, act: _Activity, backoff: int | None) -> None:
        run = act.run
        if backoff is None:
            run.activities.pop(act.scheduled_event_id, None)
            return

        def retry() -> None:
            if run.activities.get(act.scheduled_event_id) is act:
                act.attempt += 1
                self._start_attempt(act)

        self._set_timer((run.run_id, "retry", str(act.scheduled_event_id)), self._now_ms() + backoff, retry)

    def _started(self, act: _Activity) -> int:
        """The ActivityTaskStarted of the attempt that ends the activity: as on the server,
        attempts another one follows leave no events (their failure is the next one's
        ``last_failure``)."""
        return self._add(act.run, EventType.ACTIVITY_TASK_STARTED, scheduled_event_id=act.scheduled_event_id,
                         attempt=act.attempt, identity="test-worker", started_time=act.started_ms,
                         last_failure=act.last_failure)

    def _timed_out(self, act: _Activity) -> None:
        backoff = self._backoff(act, "TimeoutError", False)
        if backoff is None:
            started = self._started(act)
            self._input(act.run, EventType.ACTIVITY_TASK_TIMED_OUT, scheduled_event_id=act.scheduled_event_id,
                        started_event_id=started, timeout_type=TimeoutType.START_TO_CLOSE,
                        last_heartbeat_details=act.heartbeat_details, retry_backoff_ms=None,
                        last_failure=act.last_failure)
        else:
            act.last_failure = {"message": "activity timed out (StartToClose)", "type": "TimeoutError",
                                "stack_trace": "", "non_retryable": False, "details": None}
        self._after_attempt(act, backoff)

    # -- the Transport the processors answer through ---------------------------------------

    async def close(self) -> None:
        """The Transport's close: nothing to release (see :meth:`shutdown`)."""

    async def call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Answers of the worker's processors, as the frontend would take them."""
        body = body or {}
        if method == "GET" and path.endswith("/history"):
            run = self._runs[str((params or {})["run_id"])]
            return {"events": list(run.events), "next_page_token": None}
        if path.startswith("/queries/") and path.endswith("/respond"):
            future = self._queries.pop(path.split("/")[2], None)
            if future is not None and not future.done():
                future.set_result(body)
            return {}
        target = self._tokens.get(str(body.get("task_token", "")))
        if path == "/workflow-tasks/complete" and isinstance(target, _Run):
            self._tokens.pop(target.task_token, None)
            self._complete_task(target, body.get("commands") or [])
        elif path == "/workflow-tasks/fail" and isinstance(target, _Run):
            self._tokens.pop(target.task_token, None)
            failure = body.get("failure") or {}
            self._add(target, EventType.WORKFLOW_TASK_FAILED, scheduled_event_id=target.open_task,
                      started_event_id=target.started_event_id, cause=body.get("cause"), failure=failure)
            target.task_failure = failure  # not retried here: result() reports it
        elif path.startswith("/activity-tasks/") and isinstance(target, _Activity):
            return self._activity_answer(path.rsplit("/", 1)[1], target, body)
        else:
            raise RuntimeError(f"the test environment cannot answer {method} {path}")
        return {}

    def _activity_answer(self, verb: str, act: _Activity, body: Mapping[str, Any]) -> dict[str, Any]:
        live = act.run.activities.get(act.scheduled_event_id) is act and act.token == body.get("task_token")
        if verb == "heartbeat":
            if live:
                act.heartbeat_details = body.get("details")
            return {"cancel_requested": False}
        if not live or act.answered:
            return {}
        act.answered = True
        self._tokens.pop(act.token, None)
        if verb == "complete":
            started = self._started(act)
            self._input(act.run, EventType.ACTIVITY_TASK_COMPLETED, scheduled_event_id=act.scheduled_event_id,
                        started_event_id=started, result=body.get("result"), identity="test-worker")
            act.run.activities.pop(act.scheduled_event_id, None)
        elif verb == "fail":
            failure = dict(body.get("failure") or {})
            if body.get("last_heartbeat_details") is not None:
                act.heartbeat_details = body.get("last_heartbeat_details")
            backoff = self._backoff(act, str(failure.get("type", "")), bool(failure.get("non_retryable")))
            if backoff is None:
                started = self._started(act)
                self._input(act.run, EventType.ACTIVITY_TASK_FAILED, scheduled_event_id=act.scheduled_event_id,
                            started_event_id=started, failure=failure, identity="test-worker", retry_backoff_ms=None)
            else:
                act.last_failure = failure
            self._after_attempt(act, backoff)
        return {}



class WorkflowEnvironmentHandle:
    """A workflow in a :class:`WorkflowEnvironment`: signal, query, wait for the result,
    read the history; the same calls as :class:`~kadence.WorkflowHandle`."""

    def __init__(self, env: WorkflowEnvironment, workflow_id: str, run_id: str, result_type: Any) -> None:
        self.env = env
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.result_type = result_type

    @property
    def id(self) -> str:
        """The workflow id (``workflow_id``)."""
        return self.workflow_id

    async def signal(self, signal: str | Callable[..., Any], *args: Any) -> None:
        name = signal_name_of(signal)
        env = self.env
        env._check_driver()
        text = env.converter.encode_args(args, what=f"signal {name}")
        run = env._run(env._current[self.workflow_id])
        if run.status != "Running":
            raise WorkflowNotFoundError(404, "WorkflowNotFound", f"workflow {self.workflow_id} is not running")
        env._input(run, EventType.WORKFLOW_EXECUTION_SIGNALED, signal_name=name,
                   input=await encode_payload(env._codec, text, args=True), identity="test-client")

    async def query(self, query: str | Callable[..., Any], *args: Any, result_type: Any = None) -> Any:
        name = query_name_of(query)
        env = self.env
        env._check_driver()
        run = env._run(self.run_id)
        text = await encode_payload(env._codec, env.converter.encode_args(args, what=f"query {name}"), args=True)
        # As the server: a query waits for the run's first workflow task to complete (a query
        # right after the start, or after a signal, is answered once the workflow has run).
        while run.status == "Running" and run.task_failure is None and not any(
                e["event_type"] == EventType.WORKFLOW_TASK_COMPLETED for e in run.events):
            env._check_driver()
            await env._wait_changed(env._tick)
        query_id = f"q-{next(env._ids)}"
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        env._queries[query_id] = future
        await env._workflows.process({
            "task_token": f"query-{query_id}", "workflow_id": run.workflow_id, "run_id": run.run_id,
            "workflow_type": run.workflow_type, "scheduled_event_id": 0, "attempt": 0, "events": [],
            "query": {"query_id": query_id, "query_type": name, "args": json.loads(text or "[]")},
        })
        answer = await future
        if answer.get("error"):
            error = answer["error"]
            raise QueryFailedError(400, "QueryFailed", str(error.get("message", "")))
        if result_type is None and not isinstance(query, str):
            result_type = signature_of(query, method=True).result
        plain = await decode_payload(env._codec, answer.get("result"))
        return env.converter.decode_value(plain, result_type, what=f"result of query {name}")

    async def result(self) -> Any:
        """Wait for the workflow to close, skipping time while nothing runs; follows
        continue-as-new. WorkflowFailureError when it failed or timed out,
        WorkflowTaskError when a workflow task failed."""
        env = self.env
        run_id = self.run_id
        awaiting: list[str] = []
        try:
            while True:
                env._check_driver()
                run = env._run(run_id)
                if run_id not in awaiting:
                    awaiting.append(run_id)
                    env._awaited.append(run_id)
                    env._wake.set()
                if run.task_failure is not None:
                    raise WorkflowTaskError(f"workflow task failed: {run.task_failure.get('message', '')}")
                if run.status == "Completed":
                    plain = await decode_payload(env._codec, run.result)
                    return env.converter.decode_value(plain, self.result_type,
                                                      what=f"result of workflow {self.workflow_id}")
                if run.status in ("ContinuedAsNew", "Failed") and run.new_run_id:  # a retry too
                    run_id = run.new_run_id
                    continue
                if run.status != "Running":
                    raise WorkflowFailureError(run.status, run.failure)
                await env._wait_changed(self.env._tick)
        finally:
            for awaited in awaiting:
                env._awaited.remove(awaited)

    async def history(self) -> list[dict[str, Any]]:
        """The run's events so far."""
        return [dict(e) for e in self.env._run(self.run_id).events]

    async def describe(self) -> dict[str, Any]:
        """The run as :meth:`kadence.WorkflowHandle.describe` tells it (the fields this
        environment knows): ids, type, task queue, status and memo (codec undone)."""
        run = self.env._run(self.run_id)
        memo = await decode_payload(self.env._codec, run.memo)
        return {"workflow_id": run.workflow_id, "run_id": run.run_id, "workflow_type": run.workflow_type,
                "task_queue": run.task_queue, "status": run.status, "memo": json.loads(memo) if memo else None,
                "attempt": run.attempt, "new_run_id": run.new_run_id}

    async def execute_update(self, update: str | Callable[..., Any], *args: Any, id: str | None = None,
                             result_type: Any = None) -> Any:
        """Run an update and return its handler's value, as :meth:`kadence.WorkflowHandle.execute_update`."""
        handle = await self.start_update(update, *args, id=id, wait_for_stage="completed", result_type=result_type)
        return await handle.result()

    async def start_update(self, update: str | Callable[..., Any], *args: Any, id: str | None = None,
                           wait_for_stage: str = "accepted", result_type: Any = None,
                           ) -> WorkflowEnvironmentUpdateHandle:
        """Send an update; returns once the workflow accepted it (or it completed, with
        ``wait_for_stage="completed"``). A rejection raises WorkflowUpdateFailedError here,
        a run that closed first WorkflowAlreadyClosedError. The same ``id`` runs once."""
        env = self.env
        env._check_driver()
        name = update_name_of(update)
        if result_type is None and not isinstance(update, str):
            result_type = signature_of(update, method=True).result
        run = env._run(env._current[self.workflow_id])
        update_id = id or str(uuid.uuid4())
        if update_id not in run.updates:
            if run.status != "Running":
                raise WorkflowAlreadyClosedError(409, "WorkflowClosed", f"workflow {self.workflow_id} is closed")
            text = await encode_payload(env._codec, env.converter.encode_args(args, what=f"update {name}"), args=True)
            run.updates[update_id] = _Update(update_id, name, text)
            # As history does: a workflow task for it, unless one is outstanding (a task in
            # flight leaves it to the next one).
            if run.open_task is None and not run.backing_off:
                env._schedule_task(run)
        handle = WorkflowEnvironmentUpdateHandle(self, run.run_id, update_id, name, result_type)
        await handle._wait("completed" if wait_for_stage == "completed" else "accepted")
        return handle


class WorkflowEnvironmentUpdateHandle:
    """An update sent in a :class:`WorkflowEnvironment`: ``result()`` waits for its outcome."""

    def __init__(self, workflow: WorkflowEnvironmentHandle, run_id: str, update_id: str, name: str,
                 result_type: Any) -> None:
        self.workflow = workflow
        self.id = update_id
        self.name = name
        self.result_type = result_type
        self._run_id = run_id

    async def result(self) -> Any:
        """The handler's return value; WorkflowUpdateFailedError if it was rejected or raised."""
        update = await self._wait("completed")
        if update.failure is not None:
            raise WorkflowUpdateFailedError(self.id, update.failure, rejected=False)
        env = self.workflow.env
        plain = await decode_payload(env._codec, update.result)
        return env.converter.decode_value(plain, self.result_type, what=f"result of update {self.name} ({self.id})")

    async def _wait(self, stage: str) -> _Update:
        """Wait (time skipping meanwhile, as for a result) until the update reaches ``stage``."""
        env = self.workflow.env
        env._awaited.append(self._run_id)
        env._wake.set()
        try:
            while True:
                env._check_driver()
                run = env._run(self._run_id)
                update = run.updates[self.id]
                if update.stage == "rejected":
                    raise WorkflowUpdateFailedError(self.id, update.failure or {}, rejected=True)
                if update.stage == "closed":
                    raise WorkflowAlreadyClosedError(409, "WorkflowClosed", f"workflow {run.workflow_id} closed "
                                                     f"({run.status}) before update {self.id} completed")
                if update.stage == "completed" or (stage == "accepted" and update.stage == "accepted"):
                    return update
                if run.task_failure is not None:
                    raise WorkflowTaskError(f"workflow task failed: {run.task_failure.get('message', '')}")
                await env._wait_changed(env._tick)
        finally:
            env._awaited.remove(self._run_id)
