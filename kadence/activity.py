"""The API activity code is written against: ``@activity.defn``, ``info()``, ``heartbeat()``."""

from __future__ import annotations

from typing import Any

from kadence._activity import ActivityInfo as Info
from kadence._activity import current_context, defn

__all__ = ["Info", "defn", "heartbeat", "info", "is_cancel_requested"]


def info() -> Info:
    """The current attempt's info; only inside an activity."""
    return current_context().info


def heartbeat(*details: Any) -> None:
    """Record progress; ``details`` reach the next attempt as ``info().heartbeat_details``.

    Never blocks: the worker sends the latest details in the background, throttled.
    """
    current_context().heartbeat(details)


def is_cancel_requested() -> bool:
    """Whether the server asked (through a heartbeat reply) for this activity to stop."""
    return current_context().cancel_requested
