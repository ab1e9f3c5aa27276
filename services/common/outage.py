"""Outages of PostgreSQL and the broker: which errors are one, and how a loop waits one out.

Every long-running loop of the services (history shards, consumers, relays) either heals
or dies loudly. Healing means: an error that says "the database or broker is not there
right now" (:func:`is_transient`) is retried after a capped exponential backoff with
jitter (:class:`Backoff`), logged at WARNING on the first failure, again every
``REPORT_EVERY_S`` with the count, and at INFO on recovery. Any other error is not an
outage: the loop lets it go to its supervisor (see ``supervision.py``).

Errors are told apart by class, never by message text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

# PostgreSQL unreachable or going away: the connection (class 08, and asyncpg's own
# interface errors for a closed connection, and its protocol desynchronising when the
# server goes away mid-query), "cannot connect now" / admin shutdown /
# crash shutdown (class 57), out of connections or resources (class 53), and a
# transaction rolled back for serialization or deadlock (class 40). OSError covers
# ConnectionRefusedError, ConnectionResetError and TimeoutError (a pool acquire that
# timed out).
DATABASE_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
)

# For ``except`` clauses around a database call: anything PostgreSQL or the driver may
# raise, an outage or not (the caller decides what a non-transient one means).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *DATABASE_TRANSIENT)

# The broker unreachable, or a request that timed out: aiokafka marks the errors a
# client may retry as such (``retriable``); a timeout of ours is one as well.
BROKER_TRANSIENT: tuple[type[BaseException], ...] = (KafkaConnectionError, KafkaTimeoutError)

# For ``except`` clauses: every error class that may be an outage. A KafkaError caught
# by it still has to pass :func:`is_transient` (only the retriable ones are outages).
TRANSIENT: tuple[type[BaseException], ...] = (*DATABASE_TRANSIENT, KafkaError)

BASE_DELAY_S = 0.1
MAX_DELAY_S = 5.0
REPORT_EVERY_S = 30.0  # while an outage lasts, a WARNING with the count this often


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL or the broker is unavailable for now (retry it),
    as opposed to a bug or an error tied to the data (do not)."""
    if isinstance(exc, (*DATABASE_TRANSIENT, *BROKER_TRANSIENT)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


@dataclasses.dataclass
class Backoff:
    """One loop's current outage: how long to wait before the next try, and what to report.

    ``failed`` after each failure (it logs and returns the delay), ``wait`` to sleep that
    delay, ``recovered`` after a success. Between a first failure and the recovery the
    loop is *retrying*: ``since`` (wall clock, seconds) and ``last_error`` say since when
    and why; the health report reads them.
    """

    what: str  # e.g. "shard 3 loop": says in the log which loop waits
    logger: logging.Logger
    base: float = BASE_DELAY_S
    cap: float = MAX_DELAY_S
    failures: int = 0
    since: float | None = None
    last_error: str | None = None
    _reported: float = 0.0  # monotonic time of the last WARNING

    @property
    def retrying(self) -> bool:
        return self.failures > 0

    def delay(self) -> float:
        """The wait before the next try: doubling from ``base``, capped, with full jitter
        on its upper half (many shards hit by one outage must not retry in step)."""
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    def failed(self, exc: BaseException) -> float:
        """Count a failure and log it (first one, then every REPORT_EVERY_S); the delay to wait."""
        now = time.monotonic()
        self.failures += 1
        self.last_error = repr(exc)
        if self.failures == 1:
            self.since = time.time()
            self._reported = now
            self.logger.warning("%s: %r; retrying with backoff", self.what, exc)
        elif now - self._reported >= REPORT_EVERY_S:
            self._reported = now
            self.logger.warning("%s: still failing after %d tries over %.0f s (last: %r)", self.what,
                                self.failures, time.time() - (self.since or time.time()), exc)
        return self.delay()

    async def wait(self, exc: BaseException) -> None:
        """``failed`` then sleep the delay."""
        await asyncio.sleep(self.failed(exc))

    def recovered(self) -> None:
        """A success: the outage (if any) is over."""
        if self.failures:
            self.logger.info("%s: recovered after %d failed tries over %.1f s", self.what, self.failures,
                             time.time() - (self.since or time.time()))
        self.failures = 0
        self.since = None
        self.last_error = None
