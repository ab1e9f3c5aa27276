"""Small asyncio helpers the services share."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# Tasks whose error has been logged: its watcher (supervision.watch) and its stop (cancel) may
# both see one death, and it is said once.
_logged: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def log_death(task: asyncio.Task[Any], what: str, *, level: int = logging.ERROR) -> None:
    """Log the error ``task`` ended with, with its traceback, once per task; nothing if it
    did not end with one."""
    if task in _logged or task.cancelled() or (exc := task.exception()) is None:
        return
    _logged.add(task)
    log.log(level, "%s died", what, exc_info=exc)


# How long cancel() waits for a cancelled task to end. One that takes longer (it swallowed the
# cancellation, or its clean-up hangs) is a bug, said at ERROR: the stop must end all the same.
CANCEL_WAIT_S = 10.0


async def cancel(task: asyncio.Task[Any] | None, *, wait_s: float = CANCEL_WAIT_S) -> None:
    """Cancel a background task and wait until it has finished, ``wait_s`` at most; None is allowed.

    An error the task ended with (before the cancel, or while it was being cancelled) is
    logged, not raised: the stop that called this must go on and stop the rest. The caller's
    own cancellation is raised."""
    if task is None:
        return
    task.cancel()
    if not (await asyncio.wait([task], timeout=wait_s))[0]:
        log.error("the task %r did not end within %g s of its cancel; the stop goes on without it",
                  task.get_name(), wait_s)
        return
    if not task.cancelled():
        log_death(task, f"the task {task.get_name()!r}")


async def start_or_undo(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """``start()``; if it fails or is cancelled half-way, ``stop()`` what it began (a consumer
    or producer left would go on in the caller's event loop), then raise."""
    try:
        await start()
    except BaseException:
        await stop()
        raise
