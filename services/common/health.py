"""The answer of a ``/health`` endpoint, from the reports of the services in the process.

Each service that can tell whether it is progressing gives a :class:`HealthReport`
(history: its shards, see ``services/history/health.py``). The endpoint answers 200
``{"status": "ok"}`` with each report's details under the service's name, or 503
``{"status": "stalled"}`` when one of them is unhealthy or the process failed fatally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .supervision import Fatal


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """One service's part of ``/health``: healthy or not, and its details as JSON."""

    healthy: bool
    details: dict[str, Any]


HealthSource = Callable[[], HealthReport]


def health_answer(sources: dict[str, HealthSource], fatal: Fatal | None = None) -> tuple[int, dict[str, Any]]:
    """The status and body of ``/health`` for these services and this process's ``fatal``."""
    body: dict[str, Any] = {"status": "ok"}
    healthy = fatal is None or fatal.reason is None
    if not healthy:
        body["fatal"] = fatal.reason if fatal is not None else None
    for name, source in sources.items():
        r = source()
        healthy = healthy and r.healthy
        body[name] = r.details
    if not healthy:
        body["status"] = "stalled"
    return (200 if healthy else 503), body
