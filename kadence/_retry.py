"""Retrying calls that are safe to repeat, within a bound, with exponential backoff.

Starts and signals carry a request id that history deduplicates, and a worker's task
answer names its task attempt, which history takes once; so a call lost to a restarting
frontend (connection refused or reset, 503, 504, a timeout) can be sent again unchanged;
so can one refused (429) as over its namespace's limit. A retry waits at least what the
frontend's ``Retry-After`` asks (503 and 429 alike), capped at the retry budget left.
Used by the client (:mod:`kadence._client`) and the worker's answers
(:mod:`kadence._worker.answers`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kadence.common import Backoff
from kadence.exceptions import RPCError

__all__ = ["LONGEST_ASKED_WAIT_S", "Backoff", "asked_wait", "jittered", "outage_pause", "retrying", "timed_out",
           "unavailable", "unavailable_or_throttled"]

_log = logging.getLogger("kadence.retry")
T = TypeVar("T")

#: The longest wait a frontend's Retry-After gets where no retry budget bounds it (a wait
#: without a timeout, a worker's poll); with a budget, what is left of it caps the wait too.
#: A broken or hostile server must not park a client for an hour.
LONGEST_ASKED_WAIT_S = 30.0
#: Waits are spread by this fraction, so clients failed together do not come back together.
JITTER = 0.2


def jittered(delay: float) -> float:
    """``delay`` give or take JITTER of it."""
    return delay * random.uniform(1 - JITTER, 1 + JITTER)


def asked_wait(err: RPCError, cap: float = LONGEST_ASKED_WAIT_S) -> float:
    """The wait ``err``'s Retry-After asks for (0 if none) plus up to JITTER of it, at most
    ``cap``: never less than asked (within the cap), and the many clients a busy frontend
    told the same wait spread out rather than come back at once."""
    return min(err.retry_after * random.uniform(1, 1 + JITTER), cap) if err.retry_after > 0 else 0.0


def outage_pause(err: RPCError, deadline: float | None, now: float) -> float:
    """The pause of a wait that outlasts outages (a result's, an update's) after ``err``:
    half a second, jittered, or the Retry-After asked if longer; never past ``deadline``."""
    pause = max(jittered(0.5), asked_wait(err))
    return pause if deadline is None else max(0.0, min(pause, deadline - now))


def unavailable(err: RPCError) -> bool:
    """The frontend could not be reached or could not answer in time (connection trouble,
    503, 504): the request may or may not have been taken, and repeating it is safe only
    for an idempotent call."""
    return err.status in (0, 503, 504)


def unavailable_or_throttled(err: RPCError) -> bool:
    """``unavailable``, or refused as over the namespace's limit (429): then nothing was taken,
    and the call may go again after the frontend's Retry-After."""
    return err.status in (0, 429, 503, 504)


def timed_out(err: RPCError) -> bool:
    """The attempt ran into its own timeout (no answer at all): the frontend may be slow
    rather than down, and the attempt alone may have spent the whole retry budget."""
    return err.status == 0 and isinstance(err.__cause__, TimeoutError)


async def retrying(call: Callable[[], Awaitable[T]], *, backoff: Backoff, retry_if: Callable[[RPCError], bool],
                   what: str, logger: logging.Logger = _log) -> T:
    """``call()`` until it succeeds, raises an error ``retry_if`` refuses, or the bound is
    reached (the last error is raised then). Every retry is logged at WARNING. Each wait is
    the backoff's, jittered, or the error's Retry-After if longer (see above).

    ``backoff.within`` counts from the first try, with one exception: an attempt begun
    within it that ran into its own timeout (:func:`timed_out`) earns one more try even
    when the budget is spent meanwhile. One attempt (a start that waits for its outcome:
    45 s) may outlast the whole budget (30 s), and the call would otherwise never be tried
    again however briefly the frontend was slow; at most one try begins past the budget."""
    loop = asyncio.get_running_loop()
    deadline = None if backoff.within is None else loop.time() + backoff.within
    delay = backoff.first
    tries = 0
    while True:
        tries += 1
        began = loop.time()
        try:
            return await call()
        except RPCError as err:
            # A busy or throttled frontend is waited at least what it asks (Retry-After); its
            # ask is capped at the budget left: one last try at the budget's end, not a sleep
            # past it however long a broken server asks.
            own = jittered(delay)
            wait = max(own, asked_wait(err))
            now = loop.time()
            if deadline is not None and now + wait > deadline >= now + own:
                wait = deadline - now
            out_of_tries = backoff.attempts and tries >= backoff.attempts
            out_of_time = deadline is not None and now + wait > deadline
            if out_of_time and deadline is not None and began <= deadline and timed_out(err):
                out_of_time = False  # its one more try (see above)
            if not retry_if(err) or out_of_tries or out_of_time:
                raise
            logger.warning("%s failed (%s); retrying in %.1fs (try %d)", what, err, wait, tries + 1)
        await asyncio.sleep(wait)
        delay = min(backoff.cap, delay * backoff.factor)
