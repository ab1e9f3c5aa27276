"""Small asyncio helpers the services share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has finished; None is allowed."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def start_or_undo(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """``start()``; if it fails or is cancelled half-way, ``stop()`` what it began (a consumer
    or producer left would go on in the caller's event loop), then raise."""
    try:
        await start()
    except BaseException:
        await stop()
        raise
