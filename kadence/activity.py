"""The API activity code is written against: ``@activity.defn``, ``info()``, ``heartbeat()``."""

from __future__ import annotations

from typing import Any, NoReturn

from kadence._activity import ActivityInfo as Info
from kadence._activity import CompleteAsyncError, current_context, defn

__all__ = ["Info", "defn", "heartbeat", "info", "is_cancel_requested", "raise_complete_async"]


def info() -> Info:
    """The current attempt's info; only inside an activity."""
    return current_context().info


def heartbeat(*details: Any) -> None:
    """Record progress; ``details`` reach the next attempt as ``info().heartbeat_details``.

    Never blocks: the worker sends the latest details in the background, throttled.
    """
    current_context().heartbeat(details)


def is_cancel_requested() -> bool:
    """Whether the server asked (through a heartbeat's answer) for this activity to stop.

    It asks when the workflow cancelled the activity, and when the attempt is over anyway
    (the run closed, or the attempt timed out). An async activity is then cancelled at its
    current await (``asyncio.CancelledError``); a sync one should check this after each
    ``heartbeat()`` and raise ``asyncio.CancelledError``. Either way the worker reports the
    attempt canceled. Only an activity that heartbeats learns of it.
    """
    return current_context().cancel_requested


def raise_complete_async() -> NoReturn:
    """End the activity's function without completing the activity: the attempt stays
    running until someone with a client and ``info().task_token`` calls
    ``client.get_async_activity_handle(task_token=...)`` and ``complete``, ``fail`` or
    ``report_cancellation`` on it. Its timeouts still apply (heartbeat through the handle).
    The worker reports nothing for the attempt and frees its slot. Not in a local activity
    (its outcome is the workflow task's)."""
    if current_context().info.is_local:
        raise RuntimeError("a local activity cannot complete asynchronously")
    raise CompleteAsyncError()
