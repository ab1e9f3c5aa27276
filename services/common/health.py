"""The answer of a ``/health`` endpoint, from the reports of the services in the process.

Each service that can tell whether it is progressing gives a :class:`HealthReport`
(history: its shards, see ``services/history/health.py``). The endpoint answers 200
``{"status": "ok"}`` with each report's details under the service's name, or 503
``{"status": "stalled"}`` when one of them is unhealthy or the process failed fatally;
200 ``{"status": "degraded"}`` when all are healthy but one works impaired (the frontend
whose commands history does not answer).
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
    degraded: bool = False  # serving, but impaired: the answer says so, still 200


HealthSource = Callable[[], HealthReport]


def health_answer(sources: dict[str, HealthSource], fatal: Fatal | None = None) -> tuple[int, dict[str, Any]]:
    """The status and body of ``/health`` for these services and this process's ``fatal``."""
    body: dict[str, Any] = {"status": "ok"}
    healthy = fatal is None or fatal.reason is None
    if not healthy:
        body["fatal"] = fatal.reason if fatal is not None else None
    degraded = False
    for name, source in sources.items():
        r = source()
        healthy = healthy and r.healthy
        degraded = degraded or r.degraded
        body[name] = r.details
    if not healthy:
        body["status"] = "stalled"
    elif degraded:
        body["status"] = "degraded"
    return (200 if healthy else 503), body
