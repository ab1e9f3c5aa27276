"""The deterministic event loop that workflow code runs on.

It is driven by hand: the runtime delivers history events, then calls :meth:`run_ready`
until no callback is ready. There are no threads, no I/O and no wall clock: ``time()`` is
the time of the workflow task being processed, and a delayed callback (``call_later``,
hence ``asyncio.sleep`` and ``asyncio.wait_for``) becomes a durable timer that fires when
history says so.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar, TypeVarTuple, Unpack

__all__ = ["TimerSink", "WorkflowEventLoop"]

_log = logging.getLogger(__name__)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class TimerSink(Protocol):
    """Receives the loop's timer decisions (the workflow instance turns them into commands)."""

    def start_timer(self, delay_seconds: float) -> str: ...

    def cancel_timer(self, timer_id: str) -> None: ...

    def on_callback_error(self, exc: BaseException, message: str) -> None: ...


class _ClosedSink:
    """The sink of a closed loop: nothing reaches it (every caller checks the loop is open)."""

    def start_timer(self, delay_seconds: float) -> str:
        raise RuntimeError("the workflow loop is closed")

    def cancel_timer(self, timer_id: str) -> None:
        raise RuntimeError("the workflow loop is closed")

    def on_callback_error(self, exc: BaseException, message: str) -> None:
        raise RuntimeError("the workflow loop is closed")


_CLOSED_SINK = _ClosedSink()


class _DurableTimerHandle(asyncio.TimerHandle):
    """A TimerHandle that knows the durable timer id it stands for."""

    timer_id: str = ""

    def cancel(self) -> None:
        # TimerHandle.cancel less the calls that find this loop never in debug mode: every
        # asyncio.sleep cancels its handle once it returns, and a burst of runs due together
        # resumes one after the other (decision 0017, stop 27).
        if not self._cancelled:
            self._loop._timer_handle_cancelled(self)  # type: ignore[attr-defined]
            self._cancelled = True
            self._callback = None
            self._args = None  # type: ignore[assignment]


_new_handle = asyncio.Handle.__new__


def _handle(callback: Callable[..., object], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
            context: contextvars.Context | None) -> asyncio.Handle:
    """``asyncio.Handle(callback, args, loop, context)`` for a loop never in debug mode (the
    attributes Handle.__init__ sets, without its call to ask the loop for debug mode)."""
    handle = _new_handle(asyncio.Handle)
    handle._callback = callback  # type: ignore[attr-defined]
    handle._args = args
    handle._cancelled = False
    handle._loop = loop  # type: ignore[attr-defined]
    handle._source_traceback = None  # type: ignore[attr-defined]
    handle._repr = None  # type: ignore[attr-defined]
    handle._context = contextvars.copy_context() if context is None else context  # type: ignore[attr-defined]
    return handle


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """An asyncio loop for one workflow run; every method workflow code may reach is here."""

    def __init__(self, sink: TimerSink) -> None:
        self._sink = sink
        # Made when a callback is scheduled and dropped when run_ready empties it: a run
        # waiting in the cache holds none (its objects are what the collector's passes walk).
        self._ready: deque[asyncio.Handle] | None = None
        self._timers: dict[str, _DurableTimerHandle] = {}
        self._now = 0.0
        self._closed = False
        self._paused = False
        # A callback whose scheduling pauses the loop (pause_when_scheduled), or None.
        self._pause_on: Callable[..., object] | None = None

    @property
    def owner(self) -> TimerSink:
        """The workflow instance this loop runs code for."""
        return self._sink

    # -- driving ---------------------------------------------------------------------

    def set_time(self, seconds: float) -> None:
        """Set the workflow time seen by ``time()`` (the current workflow task's time)."""
        self._now = seconds

    def has_ready(self) -> bool:
        return bool(self._ready)

    def run_ready(self) -> None:
        """Run callbacks until none is ready (callbacks may schedule more), or until one of
        them pauses the loop (:meth:`pause`)."""
        ready = self._ready
        if ready is None:
            return
        while ready and not self._closed and not self._paused:
            handle = ready.popleft()
            if not handle._cancelled:  # (Handle.cancelled(), one call less)
                handle._run()
        if not ready:
            self._ready = None

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop :meth:`run_ready` after the callback running now; the callbacks ready stay, in
        their order, for the next :meth:`run_ready` after :meth:`unpause`."""
        self._paused = True

    def pause_when_scheduled(self, callback: Callable[..., object] | None) -> None:
        """:meth:`pause` as soon as ``callback`` is scheduled (:meth:`call_soon`), before it
        runs (None: no more). A worker waking a run's code stops there, when the run's main
        method returns, without running the callback that takes its outcome."""
        self._pause_on = callback

    def unpause(self) -> None:
        self._paused = False

    def _schedule(self, handle: asyncio.Handle) -> None:
        if self._ready is None:
            self._ready = deque()
        self._ready.append(handle)

    def fire_timer(self, timer_id: str) -> bool:
        """Make the callback of a durable timer ready; False if no such live timer."""
        handle = self._timers.pop(timer_id, None)
        if handle is None:
            return False
        if not handle._cancelled:
            self._schedule(handle)
        return True

    def pending_timer_ids(self) -> list[str]:
        return list(self._timers)

    def has_timer(self, timer_id: str) -> bool:
        """Whether the durable timer ``timer_id`` is live (started, neither fired nor cancelled)."""
        return timer_id in self._timers

    # -- scheduling ------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def call_soon(
        self, callback: Callable[[Unpack[Ts]], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        if self._closed:
            self._check_open()
        handle = _handle(callback, args, self, context)
        ready = self._ready
        if ready is None:
            ready = self._ready = deque()
        ready.append(handle)
        if callback is self._pause_on:
            self._paused = True
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self._check_open()
        if delay <= 0:
            # Nothing to wait for; a zero-length durable timer would only add a round trip.
            handle = _DurableTimerHandle(self._now, callback, args, self, context)
            self._schedule(handle)
            return handle
        timer_id = self._sink.start_timer(delay)
        handle = _DurableTimerHandle(self._now + delay, callback, args, self, context)
        handle.timer_id = timer_id
        self._timers[timer_id] = handle
        return handle

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self._now, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        timer_id = getattr(handle, "timer_id", "")
        # A timer that already fired (asyncio.sleep cancels its handle afterwards) or was
        # never durable needs no command.
        if timer_id and self._timers.pop(timer_id, None) is not None and not self._closed:
            self._sink.cancel_timer(timer_id)

    def call_soon_threadsafe(
        self, callback: Callable[[Unpack[Ts]], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        raise RuntimeError("workflow code cannot use threads; call_soon_threadsafe is not available")

    # -- futures and tasks -----------------------------------------------------------

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        self._check_open()
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # -- state and errors ------------------------------------------------------------

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return not self._closed

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Drop everything; later callbacks and errors from discarded code are ignored."""
        self._closed = True
        self._ready = None
        self._timers.clear()
        # The instance holds its loop and the loop its instance: letting go frees a finished
        # run's objects with their last reference, not at the collector's next pass over the
        # oldest generation (a pause of a quarter of a second in a worker that ran 10,000).
        self._sink = _CLOSED_SINK

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._closed:
            return
        exc = context.get("exception")
        message = str(context.get("message", "unhandled error in workflow code"))
        # Only a callback that raised (context has "handle") is a deterministic error; the
        # "never retrieved"/"destroyed" reports come from garbage collection, whose timing
        # differs between a live run and a replay, so they are only logged.
        if isinstance(exc, BaseException) and "handle" in context:
            self._sink.on_callback_error(exc, message)
        else:
            _log.debug("workflow loop: %s", message)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def get_exception_handler(self) -> None:
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this workflow instance was discarded")

    def __repr__(self) -> str:
        return f"<WorkflowEventLoop time={self._now} ready={len(self._ready or ())} timers={len(self._timers)}>"
