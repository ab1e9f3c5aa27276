"""Activity definitions and the per-attempt context behind ``activity.info()``/``heartbeat()``.

The context lives in a ContextVar set by the worker around each attempt; a sync activity
runs in a thread with a copy of that context, so the accessors work there too.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

__all__ = [
    "ActivityContext",
    "ActivityDefinition",
    "ActivityInfo",
    "CompleteAsyncError",
    "activity_name_of",
    "current_context",
    "defn",
]

_DEFINITION = "__kadence_activity_definition__"
CallableT = TypeVar("CallableT", bound=Callable[..., Any])


@dataclass(frozen=True)
class ActivityDefinition:
    """A decorated activity function and its type name."""

    name: str
    fn: Callable[..., Any]
    is_async: bool

    @staticmethod
    def of(fn: Callable[..., Any]) -> ActivityDefinition:
        found = getattr(fn, _DEFINITION, None)
        if not isinstance(found, ActivityDefinition):
            raise TypeError(f"{fn!r} is not an activity: decorate it with @activity.defn")
        if inspect.ismethod(fn) and found.fn is fn.__func__:
            # A method decorated in its class and given bound (``worker.activities=[obj.m]``):
            # the definition holds the plain function; the worker must call it on ``obj``.
            return dataclasses.replace(found, fn=fn)
        return found


@overload
def defn(fn: CallableT) -> CallableT: ...


@overload
def defn(*, name: str | None = None) -> Callable[[CallableT], CallableT]: ...


def defn(fn: CallableT | None = None, *, name: str | None = None) -> CallableT | Callable[[CallableT], CallableT]:
    """Mark a function (async, or sync to run in a thread pool) as an activity."""

    def decorate(f: CallableT) -> CallableT:
        if inspect.isclass(f) or not callable(f):
            raise TypeError(f"@activity.defn must decorate a function, got {f!r}")
        activity_name = name if name is not None else getattr(f, "__name__", "")
        if not activity_name:
            raise ValueError(f"@activity.defn on {f!r}: give the activity a name with name=")
        if inspect.isasyncgenfunction(f) or inspect.isgeneratorfunction(f):
            raise TypeError(f"@activity.defn on {activity_name}: generators cannot be activities")
        setattr(f, _DEFINITION, ActivityDefinition(activity_name, f, inspect.iscoroutinefunction(f)))
        return f

    return decorate(fn) if fn is not None else decorate


def activity_name_of(activity: str | Callable[..., Any]) -> str:
    """The activity type name for a name or an ``@activity.defn`` function."""
    if isinstance(activity, str):
        if not activity:
            raise ValueError("activity name must not be empty")
        return activity
    return ActivityDefinition.of(activity).name


@dataclass(frozen=True)
class ActivityInfo:
    """What an activity attempt knows about itself (``activity.info()``)."""

    activity_id: str
    activity_type: str
    attempt: int
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    task_token: str
    scheduled_event_id: int
    heartbeat_details: tuple[Any, ...]
    scheduled_time: datetime
    started_time: datetime
    schedule_to_close_timeout: timedelta | None
    start_to_close_timeout: timedelta | None
    heartbeat_timeout: timedelta | None
    #: A local activity's attempt (run by the worker inside the workflow task), as Temporal's.
    is_local: bool = False

    @property
    def start_to_close_deadline(self) -> datetime | None:
        """When this attempt is timed out (by the server, and cancelled locally)."""
        if self.start_to_close_timeout is None:
            return None
        return self.started_time + self.start_to_close_timeout


class CompleteAsyncError(BaseException):
    """Raised by ``activity.raise_complete_async()``: the attempt goes on after its function
    returns, completed later through the client's async activity handle. A BaseException,
    so that activity code's ``except Exception`` does not take it for a failure."""


class ActivityContext:
    """The running attempt: its info and how to report a heartbeat."""

    def __init__(self, info: ActivityInfo, heartbeat: Callable[[tuple[Any, ...]], None]) -> None:
        self.info = info
        self._heartbeat = heartbeat
        self.cancel_requested = False

    def heartbeat(self, details: tuple[Any, ...]) -> None:
        self._heartbeat(details)


_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("kadence_activity")


def current_context() -> ActivityContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("not in an activity: this function may only be called from activity code") from None


def set_context(context: ActivityContext) -> contextvars.Token[ActivityContext]:
    return _current.set(context)


def reset_context(token: contextvars.Token[ActivityContext]) -> None:
    """Leave the attempt's context, as it was before :func:`set_context` gave ``token``."""
    _current.reset(token)
