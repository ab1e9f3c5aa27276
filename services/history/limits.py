"""History limits of one run: a warning threshold (continue-as-new suggested) and a hard
limit (the run is terminated), on its event count and on the encoded size of its events.

The fold keeps both measures in the run's state (``next_event_id``, ``history_size_bytes``),
so checking them costs nothing; configured by ``KADENCE_HISTORY_*`` (services/common/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.config import Settings

    from .state import MutableState

MIB = 1 << 20
# The identity a termination by history itself carries.
LIMIT_IDENTITY = "kadence-history"


@dataclass(frozen=True)
class HistoryLimits:
    warn_events: int = 10_000
    terminate_events: int = 50_000
    warn_bytes: int = 10 * MIB
    terminate_bytes: int = 50 * MIB

    def __post_init__(self) -> None:
        # A zero or negative limit would terminate every run at its first event: refuse to start.
        for name in ("warn_events", "terminate_events", "warn_bytes", "terminate_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"KADENCE_HISTORY_{name.upper()} must be positive, got {getattr(self, name)}")

    def suggests_continue_as_new(self, s: MutableState) -> bool:
        """The run's history passed a warning threshold: its workflow should continue as new."""
        return s.next_event_id - 1 >= self.warn_events or s.history_size_bytes >= self.warn_bytes

    def exceeded(self, s: MutableState) -> str | None:
        """The termination reason when the run's history passed a hard limit, else None."""
        events = s.next_event_id - 1
        if events > self.terminate_events or s.history_size_bytes > self.terminate_bytes:
            return f"history limit exceeded: {events} events / {s.history_size_bytes} bytes"
        return None


DEFAULT_HISTORY_LIMITS = HistoryLimits()


def limits_of(settings: Settings) -> HistoryLimits:
    """The limits the settings give (``KADENCE_HISTORY_*``); ValueError if one is not positive."""
    return HistoryLimits(warn_events=settings.history_warn_events, terminate_events=settings.history_terminate_events,
                         warn_bytes=settings.history_warn_bytes, terminate_bytes=settings.history_terminate_bytes)
