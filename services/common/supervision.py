"""No half-alive process: a background task that ends when it should not brings its process down.

A service's loops run as asyncio tasks. An outage is healed inside the loop (see
``outage.py``); anything else that ends such a task (a bug, an unexpected exception, a
loop that returns) is *fatal*: :func:`watch` logs it at CRITICAL with the traceback and
declares it on the service's :class:`Fatal`. The runners (``python -m services.<name>``
and ``kadence dev``) wait on it next to SIGINT/SIGTERM, stop the service and exit
non-zero, so that a supervisor (systemd, Kubernetes, docker restart policies) starts a
fresh process, which resumes from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.aio import log_death

log = logging.getLogger(__name__)


class Fatal:
    """Set once something in the process can no longer go on; says what."""

    def __init__(self) -> None:
        self.happened = asyncio.Event()
        self.reason: str | None = None

    def declare(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.critical("fatal: %s; the process must stop and be restarted", reason)
        self.happened.set()

    async def wait(self) -> str:
        await self.happened.wait()
        return self.reason or "fatal"


def watch(task: asyncio.Task[None], what: str, fatal: Fatal) -> asyncio.Task[None]:
    """Declare ``fatal`` if ``task`` ends by itself (an exception, or a return), not if cancelled."""

    def ended(t: asyncio.Task[None]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            log.critical("%s ended by itself", what)
            fatal.declare(f"{what} ended")
        else:
            log_death(t, what, level=logging.CRITICAL)
            fatal.declare(f"{what} died: {exc!r}")

    task.add_done_callback(ended)
    return task
