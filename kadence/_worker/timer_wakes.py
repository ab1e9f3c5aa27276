"""When cached runs' user timers come due on this worker (timer run-ahead, decision 0014):
the runs armed, grouped by the millisecond of the wall clock their timer is due at, one
event-loop timer per group.

Thousands of runs asleep until the same moment come due together, and what the worker does
for each before the last run's code resumes is that run's lateness. A loop timer per run
made one loop callback, then one task, per run, each queued behind the others' sends; a
group is one callback that hands every run due by then (its own and any group the busy loop
reached late) to ``on_due`` at once, earliest first, so the caller can resume all their code
before it sends anything. Nothing is handed over before its due time by the wall clock: the
loop's clock is not the wall clock, and a group whose loop timer fires early waits again.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["Due", "TimerWakes"]

R = TypeVar("R")


class Due(NamedTuple, Generic[R]):
    """A run whose timer came due: the run, its runner as armed, the timer, when it was due (ms)."""

    run_id: str
    runner: R
    timer_id: str
    due_ms: int


class TimerWakes(Generic[R]):
    """The armed runs, by the millisecond they come due (at most one timer armed per run)."""

    def __init__(self, on_due: Callable[[list[Due[R]]], None]) -> None:
        self._on_due = on_due
        self._armed: dict[str, int] = {}  # run id -> due ms of its group
        self._groups: dict[int, dict[str, tuple[R, str]]] = {}  # due ms -> run id -> (runner, timer id)
        self._handles: dict[int, asyncio.TimerHandle] = {}  # due ms -> the group's loop timer
        self._order: list[int] = []  # heap of the groups' due ms (a group gone leaves its entry behind)

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._armed

    def arm(self, run_id: str, runner: R, timer_id: str, due_ms: int) -> None:
        """Wake ``run_id`` at ``due_ms`` by the wall clock (instead of any timer armed for it)."""
        self.disarm(run_id)
        self._armed[run_id] = due_ms
        group = self._groups.get(due_ms)
        if group is None:
            group = self._groups[due_ms] = {}
            heapq.heappush(self._order, due_ms)
            self._schedule(due_ms)
        group[run_id] = (runner, timer_id)

    def disarm(self, run_id: str) -> None:
        due_ms = self._armed.pop(run_id, None)
        if due_ms is None:
            return
        group = self._groups[due_ms]
        del group[run_id]
        if not group:
            self._drop(due_ms)

    def close(self) -> None:
        """Nothing armed wakes any more."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._groups.clear()
        self._armed.clear()
        self._order.clear()

    def take_due(self, now_ms: float | None = None) -> list[Due[R]]:
        """Every run due by ``now_ms`` (default: the wall clock now), earliest first, disarmed."""
        now = time.time() * 1000 if now_ms is None else now_ms
        due: list[Due[R]] = []
        order = self._order
        while order and order[0] <= now:
            due_ms = heapq.heappop(order)
            group = self._groups.get(due_ms)
            if group is None:
                continue  # emptied by disarm, or taken already
            self._drop(due_ms)
            for run_id, (runner, timer_id) in group.items():
                del self._armed[run_id]
                due.append(Due(run_id, runner, timer_id, due_ms))
        return due

    def _schedule(self, due_ms: int) -> None:
        loop = asyncio.get_running_loop()
        self._handles[due_ms] = loop.call_at(loop.time() + max(0.0, due_ms / 1000 - time.time()),
                                             self._fire, due_ms)

    def _drop(self, due_ms: int) -> None:
        del self._groups[due_ms]
        handle = self._handles.pop(due_ms, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, due_ms: int) -> None:
        """A group's loop timer: hand over what is due, unless the wall clock says not yet."""
        self._handles.pop(due_ms, None)
        if due_ms not in self._groups:
            return
        if time.time() * 1000 < due_ms:
            self._schedule(due_ms)  # the loop's clock ran ahead of the wall clock's
            return
        due = self.take_due()
        if due:
            self._on_due(due)
