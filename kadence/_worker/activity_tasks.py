"""Running activity attempts: context, heartbeats, local deadlines, and the answer.

Async activities run on the worker's loop; sync ones run in a thread pool with a copy of
the context, so ``activity.info()`` and ``activity.heartbeat()`` work in both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kadence._activity import (
    ActivityContext,
    ActivityDefinition,
    ActivityInfo,
    CompleteAsyncError,
    reset_context,
    set_context,
)
from kadence._converter import decode_args
from kadence._failure import failure_from_exception
from kadence._http import Transport
from kadence._worker.interception import ActivityCalls, task_headers
from kadence.converter import (
    DataConverter,
    decode_args_payload,
    default_converter,
    encode_payload,
    signature_of,
)
from kadence.exceptions import ApplicationError, PayloadError
from kadence.interceptor import ExecuteActivityInput, Interceptor, chain_activity

__all__ = ["ActivityTaskProcessor"]

_log = logging.getLogger(__name__)
_DEFAULT_HEARTBEAT_INTERVAL = 30.0


def _duration(ms: Any) -> timedelta | None:
    return timedelta(milliseconds=int(ms)) if ms else None


def _heartbeat_details(raw: Any) -> tuple[Any, ...]:
    # This SDK sends heartbeat details as a JSON array; another client may not.
    try:
        return tuple(decode_args(raw))
    except (TypeError, ValueError):
        return (raw,)


class _Heartbeater:
    """Sends the latest heartbeat details in the background, at most once per interval; when
    the server answers that the attempt is to stop, marks the attempt's context so and
    cancels ``cancels`` (an async activity's task).

    It does that itself rather than through a callback made per attempt: a closure over the
    context and the task was four more objects held through every attempt."""

    def __init__(self, transport: Transport, task_token: str, interval: float,
                 converter: DataConverter | None = None, cancels: asyncio.Task[Any] | None = None) -> None:
        self._transport = transport
        self._converter = converter or default_converter()
        self._task_token = task_token
        self._interval = interval
        self._cancels = cancels
        #: The attempt's context, once made (it takes this heartbeater's record).
        self.context: ActivityContext | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._latest: tuple[Any, ...] | None = None
        # The details recorded last, sent or not: a failure carries them to the next attempt.
        self.last_recorded: tuple[Any, ...] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._stopped = False

    def record(self, details: tuple[Any, ...]) -> None:
        """Called from activity code, on the loop or from a worker thread; never blocks.
        Details that are not strict JSON raise PayloadError here, in the activity's code."""
        self._converter.encode_args(details, what="activity.heartbeat")
        self._latest = details
        self.last_recorded = details
        if threading.get_ident() == self._thread:
            self._kick()
        else:
            try:
                self._loop.call_soon_threadsafe(self._kick)
            except RuntimeError:
                pass  # the worker's loop is gone; nobody to send to

    def _kick(self) -> None:
        if not self._stopped and (self._sender is None or self._sender.done()):
            self._sender = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while self._latest is not None and not self._stopped:
            details, self._latest = self._latest, None
            try:
                answer = await self._transport.call(
                    "POST",
                    "/activity-tasks/heartbeat",
                    body={"task_token": self._task_token, "details": await encode_payload(
                        self._converter.payload_codec, self._converter.encode_args(details, what="activity.heartbeat"),
                        args=True)},
                    timeout=10,
                )
                if answer.get("cancel_requested"):
                    self._cancel_requested()
            except Exception as err:  # noqa: BLE001 - a lost heartbeat is retried by the next one
                _log.debug("heartbeat failed: %r", err)
            # Throttle: whatever is recorded meanwhile goes out in one request.
            await asyncio.sleep(self._interval)

    def _cancel_requested(self) -> None:
        if self.context is not None:
            self.context.cancel_requested = True
        if self._cancels is not None:
            self._cancels.cancel()

    def stop(self) -> None:
        self._stopped = True
        if self._sender is not None:
            self._sender.cancel()
        # This holds the attempt's task and activity context, and the context holds this
        # heartbeater: letting go frees the attempt's objects when it ends instead of at the
        # collector's next pass over older generations.
        self.context = None
        self._cancels = None


# The context a deadline's callback runs in. Without one, asyncio copies the attempt's, and a
# cancelled timer stays in the loop's heap until its time (or a clean-up): the copy would
# hold the attempt's activity context, info and heartbeater that long, for the collector to
# walk. Its callback reads no context variable, and callbacks never run inside each other,
# so one empty context serves every deadline.
_TIMER_CONTEXT = contextvars.Context()


class _Deadline:
    """``asyncio.timeout(seconds)`` around one attempt, entered and left by plain calls
    rather than an async context manager's two coroutines (it runs on every activity task):
    when the time is up the task is cancelled, and leaving turns that cancellation (and
    only that one) into TimeoutError, as asyncio.timeout does."""

    __slots__ = ("_cancelling", "_handle", "_task", "expired")

    def __init__(self, task: asyncio.Task[Any], seconds: float) -> None:
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        loop = task.get_loop()
        self._handle: asyncio.TimerHandle | None = loop.call_at(loop.time() + seconds, self._expire,
                                                                 context=_TIMER_CONTEXT)

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def leave(self, error: BaseException | None) -> bool:
        """Stop the timer; True when ``error`` (what the attempt ended with) is the
        cancellation this deadline made, to be raised as TimeoutError."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return self.expired and self._task.uncancel() <= self._cancelling and type(error) is asyncio.CancelledError


class ActivityTaskProcessor:
    """Runs one activity attempt per polled task and reports how it ended."""

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str,
        task_queue: str,
        activities: Iterable[ActivityDefinition],
        identity: str,
        executor: concurrent.futures.Executor,
        complete: Callable[[Mapping[str, Any], Mapping[str, Any]], Awaitable[None]] | None = None,
        data_converter: DataConverter | None = None,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        """``complete`` sends a successful attempt's answer given its task and body (the
        worker's workflow processor, to run the workflow's next task ahead); by default it
        is posted as it is."""
        self._transport = transport
        self._complete = complete or self._post_completion
        self._namespace = namespace
        self._task_queue = task_queue
        self._activities = {a.name: a for a in activities}
        self._identity = identity
        self._executor = executor
        self._converter = data_converter or default_converter()
        self._inbound = chain_activity(interceptors, ActivityCalls(self._invoke))

    async def process(self, task: Mapping[str, Any]) -> None:
        token = str(task["task_token"])
        definition = self._activities.get(str(task.get("activity_type", "")))
        if definition is None:
            known = ", ".join(sorted(self._activities)) or "none"
            error = ApplicationError(
                f"activity type {task.get('activity_type')!r} is not registered on this worker (known: {known})",
                type="UnknownActivityType",
            )
            await self._fail(token, error)
            return
        done = await self._attempt(task, token, definition)
        if done is not None:
            await self._complete(*done)

    async def _attempt(self, task: Mapping[str, Any], token: str, definition: ActivityDefinition,
                       ) -> tuple[Mapping[str, Any], dict[str, Any]] | None:
        """Run the attempt; returns its task (payloads decoded) and the body of its completion,
        or None once it has reported how it ended otherwise (failed, canceled) or must not
        report (timed out here).

        A call of its own, which lets go of the attempt's objects (arguments, context, info,
        heartbeater) before the completion is sent: the completion's round trip (and the
        workflow task run ahead on it) would otherwise hold them, for the collector to walk
        again and again."""
        codec = self._converter.payload_codec
        try:
            raw_input = task.get("input")
            if codec is not None:  # without one the payloads are used as they came
                raw_input = await decode_args_payload(codec, raw_input)
                task = {**task, "heartbeat_details": await decode_args_payload(codec, task.get("heartbeat_details"))}
            raw = decode_args(raw_input)
            hints = signature_of(definition.fn).param_hints(len(raw))
            args = self._converter.decode_args(raw, hints, what=f"activity {definition.name}")
        except (TypeError, ValueError) as err:
            # The same payload would fail every attempt: no retry.
            await self._fail(token, ApplicationError(str(err), type="PayloadError", non_retryable=True))
            return None
        info = self._info(task, definition)
        current = asyncio.current_task()
        interval = _DEFAULT_HEARTBEAT_INTERVAL
        if info.heartbeat_timeout is not None:
            interval = max(0.05, info.heartbeat_timeout.total_seconds() * 0.8)
        heartbeater = _Heartbeater(self._transport, token, interval, self._converter,
                                   cancels=current if definition.is_async else None)
        context = heartbeater.context = ActivityContext(info, heartbeater.record)
        # This coroutine runs in its attempt's own asyncio task, so the context it sets is its own.
        entered = set_context(context)
        scope = _Deadline(current, info.start_to_close_timeout.total_seconds()) \
            if info.start_to_close_timeout and current is not None else None
        try:
            try:
                result = await self._inbound.execute_activity(
                    ExecuteActivityInput(definition.fn, args, headers=task_headers(task)))
            except BaseException as raised:
                if scope is not None and scope.leave(raised):
                    raise TimeoutError from raised
                raise
            if scope is not None:
                scope.leave(None)
        except CompleteAsyncError:
            # activity.raise_complete_async(): the attempt goes on without this worker; a
            # client's AsyncActivityHandle reports how it ends.
            return None
        except asyncio.CancelledError:
            if not context.cancel_requested:
                raise
            # Stopped on the server's request (the heartbeat cancelled an async activity, or
            # a sync one raised CancelledError after is_cancel_requested()): report it so.
            await self._report_canceled(token)
            return None
        except TimeoutError as err:
            if scope is not None and scope.expired:
                # The server times the attempt out on its own clock; reporting it too would
                # count the attempt twice.
                _log.warning("activity %s attempt %d passed its start-to-close timeout", info.activity_id, info.attempt)
                return None
            await self._fail(token, err, heartbeater.last_recorded)
            return None
        except Exception as err:  # noqa: BLE001 - reported as the attempt's failure
            await self._fail(token, err, heartbeater.last_recorded)
            return None
        finally:
            heartbeater.stop()
            reset_context(entered)
        try:
            payload: str | None = self._converter.encode_value(result, what=f"result of activity {definition.name}")
            if codec is not None:
                payload = await encode_payload(codec, payload)
        except PayloadError as err:
            await self._fail(token, ApplicationError(str(err), type="PayloadError"))
            return None
        return task, {"task_token": token, "result": payload, "identity": self._identity}

    async def _post_completion(self, task: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        await self._transport.call("POST", "/activity-tasks/complete", body=body)

    async def _invoke(self, input: ExecuteActivityInput) -> Any:
        if ActivityDefinition.of(input.fn).is_async:
            return await input.fn(*input.args)
        copied = contextvars.copy_context()
        call = functools.partial(copied.run, input.fn, *input.args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _report_canceled(self, token: str) -> None:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # this task goes on: it has the answer to send
        await self._transport.call("POST", "/activity-tasks/cancel",
                                   body={"task_token": token, "details": None, "identity": self._identity})

    async def _fail(self, token: str, error: BaseException, heartbeat: tuple[Any, ...] | None = None) -> None:
        body: dict[str, Any] = {"task_token": token, "failure": failure_from_exception(error),
                                "identity": self._identity}
        if heartbeat is not None:
            # The latest details may not have gone out as a heartbeat yet (they are
            # throttled, and the attempt's end cancels the sender): the next attempt gets them.
            body["last_heartbeat_details"] = await encode_payload(
                self._converter.payload_codec, self._converter.encode_args(heartbeat, what="activity.heartbeat"),
                args=True)
        await self._transport.call("POST", "/activity-tasks/fail", body=body)

    def _info(self, task: Mapping[str, Any], definition: ActivityDefinition) -> ActivityInfo:
        scheduled_ms = int(task.get("scheduled_time") or 0)
        return ActivityInfo(
            activity_id=str(task.get("activity_id", "")),
            activity_type=definition.name,
            attempt=int(task.get("attempt") or 1),
            namespace=self._namespace,
            workflow_id=str(task.get("workflow_id", "")),
            run_id=str(task.get("run_id", "")),
            workflow_type=str(task.get("workflow_type", "")),
            task_queue=self._task_queue,
            task_token=str(task["task_token"]),
            scheduled_event_id=int(task.get("scheduled_event_id") or 0),
            heartbeat_details=_heartbeat_details(task.get("heartbeat_details")),
            scheduled_time=datetime.fromtimestamp(scheduled_ms / 1000.0, tz=UTC),
            started_time=datetime.now(tz=UTC),
            schedule_to_close_timeout=_duration(task.get("schedule_to_close_timeout_ms")),
            start_to_close_timeout=_duration(task.get("start_to_close_timeout_ms")),
            heartbeat_timeout=_duration(task.get("heartbeat_timeout_ms")),
        )
