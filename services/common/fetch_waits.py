"""Fetch waits of the consumers whose hop notices carry between processes.

Between processes each hop used to end in a fetch, so the fetch waits were short (2 ms for
``kadence.requests``, 10 ms for tasks and replies) and every consumer asked the broker
hundreds of times a second for nothing: on a 2-core machine the development broker spent
more CPU on those empty fetches than on the workflows, and every hop's produce
acknowledgement queued behind them. With notices on (docs/colocation.md), a command, a
task and a reply reach their service from the notice, and the fetch is what a lost notice
falls back on: so a consumer whose hop is noticed takes the longer wait of one process
(``services/cluster.py``), unless its wait was chosen otherwise. Apache Kafka answers a
fetch as soon as records arrive, so the longer wait costs nothing there; with the
development broker, which holds a fetch for all of its wait, it bounds what a lost notice,
or a command another producer wrote, waits.
"""

from __future__ import annotations

import enum

from .config import Settings


class Consumer(enum.Enum):
    """A consumer whose fetch wait is a setting; the value is the setting's name."""

    HISTORY = "history_fetch_wait_ms"  # kadence.requests, by history
    MATCHING = "matching_fetch_wait_ms"  # kadence.tasks, by matching
    REPLIES = "replies_fetch_wait_ms"  # kadence.replies, by every frontend


# The waits between processes when no notice carries the hop: each hop ends in a fetch.
SEPARATE_WAITS_MS = {Consumer.HISTORY: 2, Consumer.MATCHING: 10, Consumer.REPLIES: 10}
# The waits of one process (services/cluster.py), where hand-over carries the hops, and of a
# hop notices carry between processes: the fetch is only the fallback.
NOTICED_WAITS_MS = {Consumer.HISTORY: 25, Consumer.MATCHING: 100, Consumer.REPLIES: 100}


def fetch_wait_ms(settings: Settings, consumer: Consumer, *, noticed: bool) -> int:
    """The fetch wait ``consumer`` runs with: the one chosen in ``settings`` if any (even one
    equal to a default), else the longer wait of a ``noticed`` hop or the short one."""
    chosen: int | None = getattr(settings, consumer.value)
    if chosen is not None:
        return chosen
    return (NOTICED_WAITS_MS if noticed else SEPARATE_WAITS_MS)[consumer]
