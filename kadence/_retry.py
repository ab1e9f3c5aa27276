"""Retrying calls that are safe to repeat, within a bound, with exponential backoff.

Starts and signals carry a request id that history deduplicates, and a worker's task
answer names its task attempt, which history takes once; so a call lost to a restarting
frontend (connection refused or reset, 503, 504, a timeout) can be sent again unchanged;
so can one refused (429) as over its namespace's limit, after the wait the frontend names.
Used by the client (:mod:`kadence._client`) and the worker's answers
(:mod:`kadence._worker.answers`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kadence.common import Backoff
from kadence.exceptions import ResourceExhaustedError, RPCError

__all__ = ["Backoff", "retrying", "timed_out", "unavailable", "unavailable_or_throttled"]

_log = logging.getLogger("kadence.retry")
T = TypeVar("T")


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
    reached (the last error is raised then). Every retry is logged at WARNING.

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
            # A throttled call waits what the frontend asks, at least; it is the frontend's load.
            wait = max(delay, err.retry_after) if isinstance(err, ResourceExhaustedError) else delay
            out_of_tries = backoff.attempts and tries >= backoff.attempts
            out_of_time = deadline is not None and loop.time() + wait > deadline
            if out_of_time and deadline is not None and began <= deadline and timed_out(err):
                out_of_time = False  # its one more try (see above)
            if not retry_if(err) or out_of_tries or out_of_time:
                raise
            logger.warning("%s failed (%s); retrying in %.1fs (try %d)", what, err, wait, tries + 1)
        await asyncio.sleep(wait)
        delay = min(backoff.cap, delay * backoff.factor)
