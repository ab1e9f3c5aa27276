"""Processing workflow tasks: the run cache, replay on a miss, answers to queries, and
the tasks a cached run runs ahead when this worker completes one of its activities or when
one of its user timers comes due (timer run-ahead: each cached run whose last act here was
a workflow task is armed for the earliest timer its code waits for, timer_wakes.py).

Runs whose timers come due together resume together: the code of every run due is run first,
one after the other in one loop callback, and their tasks are finished and sent afterwards, a
chunk at a time, each chunk after any run that came due meanwhile has resumed (decision 0017).

A cached run applies only the events a new task brings. Anything unexpected (a gap, an
error, a failed task, a task run ahead that history did not take) evicts it; the next task
then replays the full history, which is always correct, only slower.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import gc
import logging
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from kadence._activity import ActivityDefinition
from kadence._converter import decode_args
from kadence._failure import failure_from_exception
from kadence._http import Transport, path_segment
from kadence._worker.interception import traced_only
from kadence._worker.payloads import decode_events, decode_updates, encode_commands
from kadence._worker.timer_wakes import Due, TimerWakes
from kadence._workflow.definition import WorkflowDefinition
from kadence._workflow.local_activities import MARKER_PREFIX as LOCAL_ACTIVITY_PREFIX
from kadence._workflow.local_activities import LocalActivityExecutor, task_budget_seconds
from kadence._workflow.runner import RanAhead, WorkflowRunner
from kadence.converter import (
    CODEC_MARKER,
    DataConverter,
    decode_args_payload,
    decode_payload,
    default_converter,
    encode_payload,
)
from kadence.exceptions import ApplicationError, NonDeterminismError, WorkflowTaskError
from kadence.interceptor import Interceptor, TaskKind, WorkerTaskInput, WorkerTaskInterceptor, chain_task
from kadence_protocol.enums import CommandType
from kadence_protocol.tracing import tracer

__all__ = ["WorkflowTaskProcessor"]

_log = logging.getLogger(__name__)
_HISTORY_PAGE = 1000

# Ids of tasks run ahead: they must differ between workers (docs/decisions/0003), not be
# unguessable, so a generator seeded once from the OS draws them (secrets' system source cost
# a system call per task). A forked process seeds its copy again as it starts (the copy would
# draw its parent's ids), rather than every draw asking the OS for the process id.
_AHEAD_IDS = random.Random()
os.register_at_fork(after_in_child=_AHEAD_IDS.seed)

#: A timer this late by the time its task would run here (this loop busy, a burst of timers
#: due at once) is left to history, which fires it after its grace: a task run ahead that
#: reaches history after history fired the timer is wasted, and its run replays here.
TIMER_AHEAD_LATE_MS = 2000

#: Tasks run ahead on timers finished and started out to the frontend per loop turn: between
#: two chunks, runs that came due meanwhile resume first.
SEND_CHUNK = 100


class WorkflowTaskProcessor:
    """Turns polled workflow tasks into completions, failures and query answers."""

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str,
        workflows: Iterable[WorkflowDefinition],
        identity: str,
        max_cached_workflows: int = 1000,
        data_converter: DataConverter | None = None,
        activities: Iterable[ActivityDefinition] = (),
        activity_executor: concurrent.futures.Executor | None = None,
        interceptors: Sequence[Interceptor] = (),
        run_timers_ahead: bool = False,
    ) -> None:
        """``activities``: the worker's registered activities, which workflow code may run as
        local activities by name (a function given to execute_local_activity runs as it is);
        sync ones run in ``activity_executor`` (default: the loop's). ``run_timers_ahead``:
        run the task a cached run's user timer wakes at its fire time here, and say so on
        each completion (history then holds those timers' own firing for its grace)."""
        self._transport = transport
        self._converter = data_converter or default_converter()
        self._codec = self._converter.payload_codec
        self._namespace = namespace
        self._identity = identity
        self._definitions = {d.name: d for d in workflows}
        self._max_cached = max(0, max_cached_workflows)
        self._cache: OrderedDict[str, WorkflowRunner] = OrderedDict()
        self._locks = _RunLocks()
        self._interceptors = list(interceptors)
        self._local = LocalActivityExecutor({a.name: a for a in activities}, self._converter, activity_executor,
                                            interceptors=self._interceptors)
        # The chain a run ahead goes through, made once (the task processors' chains are too).
        self._run_ahead_chain = chain_task(self._interceptors, _RunAhead()) if self._interceptors else None
        self._run_ahead_traced_only = traced_only(self._interceptors)
        self._timers_ahead = run_timers_ahead and self._max_cached > 0
        # The cached runs with a timer armed, grouped by when it comes due.
        self._wakes: TimerWakes[WorkflowRunner] = TimerWakes(self._timers_due)
        # Runs whose code resumed on a timer (each holds its run's lock), their tasks not
        # finished yet, oldest first; one sender task at a time finishes and sends them.
        self._woken: deque[tuple[str, WorkflowRunner, str]] = deque()
        self._sender: asyncio.Task[None] | None = None
        # Per cached run: the last workflow task handed out here (its token names the run to
        # the frontend for a task run on a timer), only the fields that needs.
        self._handed: dict[str, dict[str, Any]] = {}
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def cached_run_ids(self) -> list[str]:
        return list(self._cache)

    async def process(self, task: Mapping[str, Any]) -> None:
        # One task at a time per run: a query must not interleave with an activation.
        run_id = str(task["run_id"])
        # The run held as `async with self._locks.hold(run_id)` would, written out: on every
        # task, that is an object, its bound __aexit__ (both held through the task's answer
        # round trip) and two coroutines fewer.
        if not self._locks.try_hold(run_id):
            await self._locks.wait_for(run_id)
        try:
            if task.get("query"):
                await self._answer_query(task)
            else:
                self._disarm(run_id)  # something new came: the run is not where it was
                await self._run_task(task)
                self._arm(run_id)
        finally:
            self._locks.release(run_id)

    def close(self) -> None:
        """The worker stops: no timer of a cached run wakes here any more (history fires them)."""
        self._closed = True
        self._wakes.close()
        for task in self._timer_tasks:
            task.cancel()
        while self._woken:  # resumed here, never sent: history fires their timers after the grace
            run_id, _, _ = self._woken.popleft()
            self._evict(run_id)
            self._locks.release(run_id)

    async def complete_activity(self, task: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        """Send an activity's result; when this worker holds the run, with the workflow's next
        task run ahead on it (docs/protocol.md), which saves the round trip through history
        and matching that handing out that task would take."""
        run_id = str(task.get("run_id", ""))
        if run_id not in self._cache:
            await self._transport.call("POST", "/activity-tasks/complete", body=body)
            return
        if not self._locks.try_hold(run_id):  # held as in process()
            await self._locks.wait_for(run_id)
        try:
            self._disarm(run_id)
            await self._complete_activity_locked(run_id, task, body)
            self._arm(run_id)
        finally:
            self._locks.release(run_id)

    async def _complete_activity_locked(self, run_id: str, task: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        """:meth:`complete_activity` for a run held here, under the run's lock."""
        result = body.get("result")
        try:
            # The runner reads plain JSON; the body keeps the encoded result.
            plain = result if isinstance(result, str) else None
            if self._codec is not None or (plain is not None and CODEC_MARKER in plain):
                plain = await decode_payload(self._codec, plain)
        except Exception as err:  # noqa: BLE001 - then the task is handed out as usual
            _log.info("activity result of run %s could not be decoded to run ahead (%s)", run_id, err)
            self._evict(run_id)
            await self._transport.call("POST", "/activity-tasks/complete", body=body)
            return
        ahead = await self._intercepted_run_ahead(run_id, task, plain)
        if ahead is None:
            await self._transport.call("POST", "/activity-tasks/complete", body=body)
            return
        try:
            workflow_task = ahead.to_json()
            if self._timers_ahead:
                workflow_task["runs_timers_ahead"] = True
            if self._codec is not None:
                workflow_task["commands"] = await encode_commands(self._codec, workflow_task["commands"])
            await self._transport.call("POST", "/activity-tasks/complete",
                                       body={**body, "workflow_task": workflow_task})
        except BaseException:
            self._evict(run_id)  # whether history took the task is unknown
            raise
        runner = self._cache.get(run_id)
        if runner is not None and runner.finished:
            self._evict(run_id)

    async def _intercepted_run_ahead(self, run_id: str, task: Mapping[str, Any], result: Any) -> RanAhead | None:
        """:meth:`_run_ahead` behind the interceptors' task chain (a task of kind RAN_AHEAD)."""
        if self._chain_passes_on():
            return self._run_ahead(run_id, task, result)
        return await self._through_chain(task, functools.partial(self._run_ahead, run_id, task, result))

    def _chain_passes_on(self) -> bool:
        """Whether the run-ahead chain would only pass a task on (none, or tracing only and off)."""
        return self._run_ahead_chain is None or (self._run_ahead_traced_only and tracer() is None)

    async def _through_chain(self, task: Mapping[str, Any], run: Callable[[], RanAhead | None]) -> RanAhead | None:
        """``run`` (a task run ahead) called at the end of the interceptors' task chain."""
        assert self._run_ahead_chain is not None
        # The chain's end finds what to run, and leaves its answer, in this call's context.
        call = _RunAheadCall(run)
        token = _RUN_AHEAD_CALL.set(call)
        try:
            await self._run_ahead_chain.run_task(WorkerTaskInput(TaskKind.RAN_AHEAD, task, self._namespace, ""))
        finally:
            _RUN_AHEAD_CALL.reset(token)
        return call.ahead

    @staticmethod
    def _ahead_id() -> int:
        """A new id for a task run ahead (never 0)."""
        return _AHEAD_IDS.getrandbits(63) or 1

    def _run_ahead(self, run_id: str, task: Mapping[str, Any], result: Any) -> RanAhead | None:
        runner = self._cache.get(run_id)
        if runner is None:
            return None
        self._cache.move_to_end(run_id)
        try:
            return runner.run_ahead(activity_id=str(task.get("activity_id", "")),
                                    scheduled_event_id=int(task["scheduled_event_id"]),
                                    result=result if isinstance(result, str) else None,
                                    time_ms=int(time.time() * 1000), ahead_id=self._ahead_id())
        except Exception as err:  # noqa: BLE001 - the task is then handed out and fails there, in history
            _log.info("workflow run %s could not run ahead on activity %s (%s)", run_id,
                      task.get("activity_id"), err)
            self._evict(run_id)
            return None

    async def _run_task(self, task: Mapping[str, Any]) -> None:
        run_id = str(task["run_id"])
        took = time.monotonic()
        cached = self._cache.get(run_id)
        # A copy of the task the cached run answered last: history's re-dispatch published it
        # again while the answer was on its way (a burst of starts). The run's lock was held
        # until the broker acknowledged that answer, so history takes it before this copy's:
        # the copy is answered from a run of its own (its answer normally stale, ignored) and
        # the cached run, history's, stays. Replacing it with the copy's run made its next
        # task a replay (the copy ran at another time than the start history recorded).
        apart = cached is not None and cached.answered(int(task.get("scheduled_event_id") or 0),
                                                       int(task.get("attempt") or 1))
        runner: WorkflowRunner | None = None
        try:
            runner, commands = await (self._replay(task) if apart else self._activate(task))
            if runner.local_activities_waiting():
                commands = await self._run_local_activities(runner, took)
        except Exception as err:  # noqa: BLE001 - every error becomes a task failure
            if apart and runner is not None:
                runner.dispose()
            self._evict(run_id)
            cause = "NonDeterminism" if isinstance(err, NonDeterminismError) else "WorkflowError"
            failing = err.cause if isinstance(err, WorkflowTaskError) and err.cause is not None else err
            _log.warning("workflow task for run %s failed (%s, attempt %s): %s", run_id, cause,
                         task.get("attempt", 1), err)
            await self._transport.call(
                "POST",
                "/workflow-tasks/fail",
                body={
                    "task_token": task["task_token"],
                    "cause": cause,
                    "failure": failure_from_exception(failing),
                    "identity": self._identity,
                },
            )
            return
        if apart:
            runner.dispose()  # its commands are all this copy's answer needs
        try:
            sent = [c.to_json() for c in commands]
            body = {
                "task_token": task["task_token"],
                "commands": sent if self._codec is None else await encode_commands(self._codec, sent),
                "identity": self._identity,
            }
            if self._timers_ahead and not any(_backoff_timer(c) for c in sent):
                body["runs_timers_ahead"] = True
            if self._timers_ahead and not apart:
                # Set once the run is in the cache: a replay evicts what it replaces, and this.
                self._handed[run_id] = {"task_token": task.get("task_token"), "workflow_id": task.get("workflow_id"),
                                        "run_id": task.get("run_id"), "workflow_type": task.get("workflow_type")}
            await self._transport.call("POST", "/workflow-tasks/complete", body=body)
        except BaseException:
            # Whether history took the commands is unknown: rebuild from it next time.
            self._evict(run_id)
            raise
        if runner.finished and not apart:
            self._evict(run_id)

    async def _run_local_activities(self, runner: WorkflowRunner, took: float) -> list[Any]:
        """Run the local activities the task waits for, in rounds (the code may ask for more
        once it has outcomes), within the task's budget; returns the task's commands."""
        deadline = took + task_budget_seconds(runner.instance.started_info().workflow_task_timeout)
        commands: list[Any] = []
        while requests := runner.local_activities_waiting():
            # All of a round's outcomes are handed back together, in request order, so a
            # replay (which resolves them from the markers the same way) decides the same.
            outcomes = await asyncio.gather(*(self._local.run(r, deadline) for r in requests))
            commands = runner.resolve_local_activities(outcomes)
        return commands

    async def _activate(self, task: Mapping[str, Any]) -> tuple[WorkflowRunner, list[Any]]:
        run_id = str(task["run_id"])
        events: Sequence[Mapping[str, Any]] = task.get("events") or []
        started_time = int(task.get("started_time") or 0)
        # The update requests waiting for the workflow.
        updates: Sequence[Mapping[str, Any]] = task.get("updates") or ()
        if self._codec is not None:
            events = await decode_events(self._codec, events)
            updates = await decode_updates(self._codec, updates)
        cached = self._cache.get(run_id)
        if cached is not None:
            if events and int(events[0]["event_id"]) == cached.last_event_id + 1:
                self._cache.move_to_end(run_id)
                try:
                    return cached, cached.apply(events, started_time_ms=started_time, updates=updates)
                except Exception as err:  # noqa: BLE001 - the full replay below decides
                    _log.info("cached run %s could not apply the new events (%s); replaying", run_id, err)
            self._evict(run_id)
        runner, commands = await self._replay(task, events, updates)
        self._remember(run_id, runner)
        return runner, commands

    async def _replay(self, task: Mapping[str, Any], events: Sequence[Mapping[str, Any]] | None = None,
                      updates: Sequence[Mapping[str, Any]] | None = None) -> tuple[WorkflowRunner, list[Any]]:
        """A new runner for the task's run, its history replayed and the task run on it (not
        cached). ``events`` and ``updates``: the task's, decoded already."""
        if events is None or updates is None:
            events, updates = task.get("events") or [], task.get("updates") or ()
            if self._codec is not None:
                events = await decode_events(self._codec, events)
                updates = await decode_updates(self._codec, updates)
        if events and int(events[0]["event_id"]) == 1:
            history = list(events)
        else:
            history = await self._fetch_history(task, upto=int(task["scheduled_event_id"]))
            # A later attempt of a failing task brings its own WorkflowTaskScheduled, which
            # history writes only if the attempt completes: it follows the stored events.
            last = int(history[-1]["event_id"]) if history else 0
            history += [e for e in events if int(e["event_id"]) > last]
        runner = self._new_runner(task, history)
        try:
            commands = runner.apply(history, started_time_ms=int(task.get("started_time") or 0), updates=updates)
        except BaseException:
            runner.dispose()
            raise
        return runner, commands

    async def _answer_query(self, task: Mapping[str, Any]) -> None:
        query = task["query"]
        run_id = str(task["run_id"])
        body: dict[str, Any]
        temporary: WorkflowRunner | None = None
        try:
            runner = self._cache.get(run_id)
            if runner is None or runner.ahead:
                # A run whose task ran ahead holds state history may not take: answer from
                # what history has.
                history = await self._fetch_history(task, upto=None)
                temporary = runner = self._new_runner(task, history)
                # Replay only: the state after the last completed task, nothing is sent.
                runner.apply(history, run_live=False)
            args = decode_args(await decode_args_payload(self._codec, query.get("args")))
            result = runner.query(str(query["query_type"]), args)
            payload = self._converter.encode_value(result, what=f"result of query {query['query_type']}")
            body = {"result": await encode_payload(self._codec, payload)}
        except Exception as err:  # noqa: BLE001 - the querying client gets the error
            body = {"error": failure_from_exception(err)}
        finally:
            if temporary is not None:
                temporary.dispose()
        await self._transport.call("POST", f"/queries/{path_segment(str(query['query_id']))}/respond", body=body)

    def _new_runner(self, task: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> WorkflowRunner:
        workflow_type = str(task.get("workflow_type") or "")
        if not workflow_type and history:
            workflow_type = str((history[0].get("attributes") or {}).get("workflow_type", ""))
        definition = self._definitions.get(workflow_type)
        if definition is None:
            raise ApplicationError(
                f"workflow type {workflow_type!r} is not registered on this worker "
                f"(known: {', '.join(sorted(self._definitions)) or 'none'})",
                type="UnknownWorkflowType",
            )
        return WorkflowRunner(
            definition, namespace=self._namespace, workflow_id=str(task["workflow_id"]), run_id=str(task["run_id"]),
            data_converter=self._converter, interceptors=self._interceptors,
        )

    async def _fetch_history(self, task: Mapping[str, Any], *, upto: int | None) -> list[Mapping[str, Any]]:
        """The run's events from 1 (up to ``upto`` inclusive), following pages."""
        path = f"/workflows/{path_segment(str(task['workflow_id']))}/history"
        events: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            params = {"run_id": task["run_id"], "page_size": _HISTORY_PAGE, "next_page_token": token}
            answer = await self._transport.call("GET", path, params=params)
            events.extend(answer.get("events") or [])
            token = answer.get("next_page_token")
            if not token or (upto is not None and events and int(events[-1]["event_id"]) >= upto):
                break
        if upto is not None:
            # Later events (the task's own WorkflowTaskStarted, new signals) belong to the
            # next task, not this one.
            events = [e for e in events if int(e["event_id"]) <= upto]
        return await decode_events(self._codec, events)

    def _remember(self, run_id: str, runner: WorkflowRunner) -> None:
        if self._max_cached == 0:
            return
        self._cache[run_id] = runner
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._max_cached:
            oldest_id, oldest = self._cache.popitem(last=False)
            self._disarm(oldest_id)  # its timers fire in history, after the grace
            self._handed.pop(oldest_id, None)
            oldest.dispose()

    def _evict(self, run_id: str) -> None:
        self._disarm(run_id)
        self._handed.pop(run_id, None)
        runner = self._cache.pop(run_id, None)
        if runner is not None:
            runner.dispose()

    # -- timer run-ahead ---------------------------------------------------------------------

    def _arm(self, run_id: str) -> None:
        """Arm the cached run for the earliest user timer it waits for, when the run is where a
        task could run ahead on its firing (docs/protocol.md, timer run-ahead)."""
        if not self._timers_ahead or self._closed or run_id not in self._handed:
            return
        runner = self._cache.get(run_id)
        if runner is None:
            return
        upcoming = runner.next_timer()
        if upcoming is None:
            return
        timer_id, due_ms = upcoming
        self._wakes.arm(run_id, runner, timer_id, due_ms)

    def _disarm(self, run_id: str) -> None:
        if self._wakes:  # the common case (no run waits on a timer here): nothing to look up
            self._wakes.disarm(run_id)

    def _timers_due(self, due: list[Due[WorkflowRunner]]) -> None:
        """Runs whose timers came due (by the wall clock): resume the code of each, here and
        now, one after the other, and leave what the SDK does after each run's code (its
        closing command, the task to send) to the sender, so that no run's code waits for
        that of the runs before it. A run another task holds (that task arms it again when
        done), or any run while interceptors wrap tasks run ahead, goes through a task of
        its own instead (resumed there, in its turn)."""
        if self._closed:
            return
        # No pass of the collector in the middle of the lot (a full pass over thousands of
        # cached runs stops the loop for a tenth of a second or more): it runs after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._wake(due)
        finally:
            if collecting:
                gc.enable()
        if self._woken and self._sender is None:
            self._sender = self._spawn(self._send_woken())

    def _wake(self, due: list[Due[WorkflowRunner]]) -> None:
        direct = self._chain_passes_on()
        # One reading of the clock for the lot: each task's time, raised to its timer's due
        # time, lies between that and history's clock, as history checks.
        now_ms = int(time.time() * 1000)
        while due:
            for run_id, runner, timer_id, due_ms in due:
                if direct and self._locks.try_hold(run_id):
                    if self._wake_held(run_id, runner, timer_id, due_ms, now_ms):
                        self._woken.append((run_id, runner, timer_id))
                else:
                    self._spawn(self._run_timer_ahead(run_id, runner, timer_id, due_ms))
            # Runs that came due meanwhile resume before any finishing.
            now_ms = int(time.time() * 1000)
            due = self._wakes.take_due(now_ms)

    def _wake_held(self, run_id: str, runner: WorkflowRunner, timer_id: str, due_ms: int, now_ms: int) -> bool:
        """Resume the run's code on its timer, the run held; False (and let go) if it did not."""
        if self._cache.get(run_id) is not runner or run_id not in self._handed \
                or now_ms - due_ms > TIMER_AHEAD_LATE_MS:
            self._locks.release(run_id)  # evicted, or too late to beat history's grace
            return False
        try:
            if runner.wake_timer_ahead(timer_id=timer_id, time_ms=now_ms):
                return True
        except Exception as err:  # noqa: BLE001 - history fires the timer after its grace
            _log.info("workflow run %s could not run ahead on timer %s (%s)", run_id, timer_id, err)
            self._evict(run_id)
        self._locks.release(run_id)
        return False

    def _finish_held(self, run_id: str, runner: WorkflowRunner, timer_id: str) -> None:
        """Finish the task a held run's timer woke and start sending it (or let go)."""
        handed = self._handed.get(run_id)
        ahead: RanAhead | None = None
        if self._cache.get(run_id) is runner and handed is not None:
            self._cache.move_to_end(run_id)
            try:
                ahead = runner.finish_ahead(self._ahead_id())
            except Exception as err:  # noqa: BLE001 - history fires the timer after its grace
                _log.info("workflow run %s could not run ahead on timer %s (%s)", run_id, timer_id, err)
        if ahead is None or handed is None:  # or it left the cache while it waited here
            self._evict(run_id)
            self._locks.release(run_id)
            return
        self._spawn(self._send_held(_Woken(run_id, runner, timer_id, handed, ahead)))

    async def _send_woken(self) -> None:
        """Finish and send the tasks of the runs resumed on timers, a chunk per loop turn;
        before each chunk, the runs due by then resume (their code first, the rest after)."""
        try:
            while self._woken:
                if self._wakes:
                    due = self._wakes.take_due()
                    if due:
                        self._timers_due(due)
                for _ in range(min(SEND_CHUNK, len(self._woken))):
                    self._finish_held(*self._woken.popleft())
                await asyncio.sleep(0)  # the chunk's tasks take their first step (encoding, queueing)
        finally:
            self._sender = None

    async def _send_held(self, woken: _Woken) -> None:
        try:
            await self._send_timer_ahead(woken.run_id, woken.runner, woken.timer_id, woken.handed, woken.ahead)
        finally:
            self._locks.release(woken.run_id)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(job)
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)
        return task

    async def _run_timer_ahead(self, run_id: str, runner: WorkflowRunner, timer_id: str, due_ms: int) -> None:
        """The task a timer wakes, run in a task of its own (through the interceptors' chain)."""
        async with self._locks.hold(run_id):
            handed = self._handed.get(run_id)
            if self._cache.get(run_id) is not runner or handed is None or self._closed:
                return  # evicted, or a task came meanwhile (it re-armed what is left)
            if time.time() * 1000 - due_ms > TIMER_AHEAD_LATE_MS:
                return  # too late to beat history's grace: the task is handed out as usual
            try:
                ahead = await self._intercepted_timer_ahead(run_id, handed, runner, timer_id)
            except Exception as err:  # noqa: BLE001 - history fires the timer after its grace
                _log.info("workflow run %s could not run ahead on timer %s (%s)", run_id, timer_id, err)
                self._evict(run_id)
                return
            if ahead is None:
                return
            await self._send_timer_ahead(run_id, runner, timer_id, handed, ahead)

    async def _send_timer_ahead(self, run_id: str, runner: WorkflowRunner, timer_id: str,
                                handed: Mapping[str, Any], ahead: RanAhead) -> None:
        """Send a task run ahead on a timer (the run held); then arm the run for its next timer."""
        try:
            workflow_task = {**ahead.to_json(), "runs_timers_ahead": True}
            if self._codec is not None:
                workflow_task["commands"] = await encode_commands(self._codec, workflow_task["commands"])
            await self._transport.call("POST", "/workflow-tasks/timer-ahead", body={
                "task_token": handed["task_token"], "timer_id": timer_id, "identity": self._identity,
                "workflow_task": workflow_task})
        except Exception as err:  # noqa: BLE001 - whether history took the task is unknown
            _log.info("workflow task run ahead on timer %s of run %s was not sent (%s)", timer_id, run_id, err)
            self._evict(run_id)
            return
        if runner.finished:
            self._evict(run_id)
        else:
            self._arm(run_id)

    async def _intercepted_timer_ahead(self, run_id: str, handed: Mapping[str, Any], runner: WorkflowRunner,
                                       timer_id: str) -> RanAhead | None:
        """The task run on the timer's firing, behind the interceptors' task chain (a task of
        kind RAN_AHEAD, as one run on an activity's result)."""
        def run() -> RanAhead | None:
            self._cache.move_to_end(run_id)
            return runner.run_timer_ahead(timer_id=timer_id, time_ms=int(time.time() * 1000),
                                          ahead_id=self._ahead_id())

        if self._chain_passes_on():
            return run()
        return await self._through_chain(handed, run)


#: Read once: on CPython 3.11 an enum member read through its class takes the enum
#: metaclass's slow attribute hook, and this is checked per command of every completion.
_START_TIMER = CommandType.START_TIMER


def _backoff_timer(command: Mapping[str, Any]) -> bool:
    """A local activity's backoff timer: the worker never runs it ahead (the attempt after it
    runs in a task handed out), so a completion starting one claims no grace for its timers."""
    return command["command_type"] == _START_TIMER \
        and str(command["attributes"]["timer_id"]).startswith(LOCAL_ACTIVITY_PREFIX)


class _RunLocks:
    """One task of a run at a time, in the order they came. A run held by a task with none
    waiting behind it is a dictionary entry and nothing more (an asyncio.Lock and its count
    per task were three more objects held through each task's answer round trip); the tasks
    that wait behind it wait on futures of their own. The entry goes once no task holds the
    run or waits for it."""

    def __init__(self) -> None:
        # run id -> the futures of the tasks waiting for it, oldest first (None: none waits)
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}

    def hold(self, run_id: str) -> _HeldRun:
        """``async with locks.hold(run_id):`` runs its body with the run held."""
        return _HeldRun(self, run_id)

    def try_hold(self, run_id: str) -> bool:
        """Hold the run now if nothing holds it (then :meth:`release` it); False otherwise."""
        if run_id in self._held:
            return False
        self._held[run_id] = None
        return True

    async def wait_for(self, run_id: str) -> None:
        """Wait until the tasks ahead have let go of the run; then this one holds it."""
        waiters = self._held[run_id]
        if waiters is None:
            waiters = self._held[run_id] = deque()
        turn = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release(run_id)  # handed the run as it was cancelled: the next one gets it
            elif turn in waiters:  # a holder letting go meanwhile passed over (and dropped) it
                waiters.remove(turn)
            raise

    def release(self, run_id: str) -> None:
        """The holder lets go: the oldest task still waiting holds the run now."""
        waiters = self._held[run_id]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._held[run_id]

    def __len__(self) -> int:
        return len(self._held)


class _HeldRun:
    """One task's hold on its run (a class, not a generator context manager: one small
    object per task)."""

    __slots__ = ("_locks", "_run_id")

    def __init__(self, locks: _RunLocks, run_id: str) -> None:
        self._locks = locks
        self._run_id = run_id

    async def __aenter__(self) -> None:
        if not self._locks.try_hold(self._run_id):
            await self._locks.wait_for(self._run_id)

    async def __aexit__(self, *exc: object) -> None:
        self._locks.release(self._run_id)


class _Woken(NamedTuple):
    """A run whose code ran ahead on a timer, held, its task not sent yet."""

    run_id: str
    runner: WorkflowRunner
    timer_id: str
    handed: Mapping[str, Any]
    ahead: RanAhead


class _RunAheadCall:
    """One run ahead going through the interceptors' chain: how to run it, and its answer."""

    __slots__ = ("ahead", "run")

    def __init__(self, run: Callable[[], RanAhead | None]) -> None:
        self.run = run
        self.ahead: RanAhead | None = None


_RUN_AHEAD_CALL: contextvars.ContextVar[_RunAheadCall] = contextvars.ContextVar("kadence_run_ahead_call")


class _RunAhead(WorkerTaskInterceptor):
    """The end of the run-ahead chain: runs the task ahead for the call in the context (an
    interceptor that goes on in a task of its own passes the context on: asyncio copies it)."""

    def __init__(self) -> None:  # the chain's end: nothing comes after it
        pass

    async def run_task(self, input: WorkerTaskInput) -> None:
        call = _RUN_AHEAD_CALL.get()
        call.ahead = call.run()
