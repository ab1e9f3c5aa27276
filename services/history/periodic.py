"""A background job run every so often by the history service (retention, schedules).

Each round that fails is logged and the next one comes after a growing pause (up to a
minute), so the job heals once PostgreSQL or the broker is back; a round that raises
something unexpected is logged with its traceback, and the job carries on the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from services.common import outage

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
EXPECTED = (*outage.DATABASE_ERRORS, KafkaError, TimeoutError)


async def run_every(name: str, interval_s: Callable[[], float], round_: Callable[[], Awaitable[object]]) -> None:
    """Run ``round_`` every ``interval_s()`` seconds, forever (until cancelled)."""
    failures = 0
    while True:
        try:
            await round_()
            failures = 0
        except EXPECTED as exc:
            failures += 1
            log.warning("%s failed (%r); trying again", name, exc)
        except Exception:
            failures += 1
            log.exception("%s failed unexpectedly; trying again", name)
        pause = interval_s() if not failures else min(MAX_BACKOFF_S, max(interval_s(), 0.5) * 2 ** (failures - 1))
        await asyncio.sleep(pause)
