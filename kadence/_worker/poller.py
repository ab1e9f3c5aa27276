"""Long-poll loops shared by workflow and activity tasks: slots, backoff, never crash."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kadence._http import Transport
from kadence._retry import JITTER, asked_wait, jittered
from kadence._worker.adaptive import FixedLimits, TaskLimits
from kadence.exceptions import ResourceExhaustedError, RPCError, WorkerRefusedError

__all__ = ["Poller", "Reachability", "Slots"]

_log = logging.getLogger(__name__)
#: Polls refused (401/403) in a row before the poller gives up and the worker's run() raises:
#: a few, so that a frontend reloading its keys does not stop workers, never forever.
REFUSALS_BEFORE_STOPPING = 3
_MAX_BACKOFF_S = 10.0  # the longest a poller waits between failed polls, a Retry-After's too

# The context a task's done callback (a set's discard) runs in: without one, asyncio copies
# the caller's context for every callback, one more object per task in flight. The callback
# reads no context variable, and callbacks never run inside each other, so one serves all.
_CALLBACK_CONTEXT = contextvars.Context()


class Slots:
    """A counting limit from which a poller can take several slots at once.

    Waiters wait on futures of their own rather than on an asyncio.Condition: a release,
    once per task, then costs no lock to take and no coroutine to run."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a concurrency limit must be at least 1")
        self._size = size
        self._free = size
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire_some(self, most: int) -> int:
        """Wait for at least one free slot, then take up to ``most``."""
        while self._free <= 0:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        taken = min(most, self._free)
        self._free -= taken
        return taken

    @property
    def free(self) -> int:
        return self._free

    @property
    def size(self) -> int:
        return self._size

    async def resize(self, size: int) -> None:
        """Change the limit; slots taken beyond a smaller one are not taken back, the free
        count stays below zero until enough of them are released."""
        size = max(1, size)
        if size == self._size:
            return
        self._free += size - self._size
        self._size = size
        self._wake()

    async def release(self, count: int = 1) -> None:
        self._free += count
        self._wake()

    def _wake(self) -> None:
        # Every waiter looks again (as Condition.notify_all did): one that finds no free
        # slot waits anew.
        if self._free > 0 and self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class Reachability:
    """Says, for all the pollers of one worker, when the frontend cannot be reached: a
    WARNING at the first failed poll, then again after 2, 4, 8... failures in a row (so
    about as often as the pollers' backoff lets them try), and INFO once polls work again.
    A worker pointed at a wrong address is told at once, not left silent."""

    def __init__(self, target: str = "the frontend") -> None:
        self._target = target
        self._failures = 0

    def failed(self, path: str, err: BaseException, retry_in: float) -> None:
        self._failures += 1
        n = self._failures
        if n & (n - 1) == 0:  # a power of two
            _log.warning("cannot poll %s at %s (%d failure(s) in a row): %s; retrying in %.1fs",
                         self._target, path, n, err, retry_in)
        else:
            _log.debug("poll %s failed (%r); retrying in %.1fs", path, err, retry_in)

    def succeeded(self) -> None:
        if self._failures:
            _log.info("polling %s works again after %d failure(s)", self._target, self._failures)
            self._failures = 0


class HeldAnswers(Protocol):
    """Where the tasks' answers go (answers.py AnswerBatcher): held while the tasks of one
    poll's answer start, so that all of them run before any answer leaves."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class Poller:
    """Repeatedly polls one endpoint and hands each task to ``process`` in its own asyncio task."""

    def __init__(
        self,
        transport: Transport,
        path: str,
        *,
        process: Callable[[Mapping[str, Any]], Awaitable[None]],
        slots: Slots,
        identity: str,
        max_tasks: int,
        wait_seconds: float,
        reachability: Reachability | None = None,
        limits: TaskLimits | None = None,
        answers: HeldAnswers | None = None,
    ) -> None:
        """``limits`` says how many tasks to ask for per poll and to run at once (see
        kadence/_worker/adaptive.py); without it, ``max_tasks`` per poll and the slots' size.
        ``answers``: held while the tasks of one poll's answer start (see :meth:`_start`)."""
        self._transport = transport
        self._reachability = reachability or Reachability()
        self._path = path
        self._process = process
        self._slots = slots
        self._identity = identity
        self._limits = limits or FixedLimits(max(1, max_tasks), slots.size)
        self._wait_seconds = wait_seconds
        self._answers = answers
        self.running: set[asyncio.Task[None]] = set()
        # Every task's done callback: one bound method for all (each look-up makes a new one).
        self._forget = self.running.discard

    async def run(self) -> None:
        """Poll until cancelled. Errors are logged and retried with capped backoff, except
        polls refused (401/403) :data:`REFUSALS_BEFORE_STOPPING` times in a row: those raise
        :class:`WorkerRefusedError` (retrying a credential that is refused helps nobody). A poll
        refused as over the namespace's limit (429) is retried after the frontend's Retry-After,
        and so is any other failed poll whose answer carries one (a busy frontend's 503); every
        wait jittered and at most 10 s.

        When slots are free, the next poll goes out before the answer's tasks run. A full
        answer means more tasks wait: otherwise a worker busy with one poll's worth of tasks
        (tens of milliseconds in a burst) leaves the rest waiting at the server that long,
        with their wake-up time (workflow.now()) still to be stamped. A short one too: the
        server then takes the poll while the tasks run, instead of right after their answers,
        when it is taking those answers to the broker and the shard (docs/decisions/0016).
        """
        backoff = 0.0
        refusals = 0  # polls answered 401/403 in a row
        throttled = 0  # polls answered 429 in a row
        held: list[Mapping[str, Any]] = []  # tasks of a full answer, started once the next poll is out
        try:
            while True:
                taken = await self._slots.acquire_some(self._limits.poll_size())
                request = asyncio.ensure_future(self._transport.call(
                    "POST",
                    self._path,
                    body={"identity": self._identity, "max_tasks": taken, "wait_seconds": self._wait_seconds},
                    timeout=self._wait_seconds + 15,
                ))
                try:
                    if held:
                        await self._yield_to_writes()
                        self._start(held)
                        held = []
                    answer = await request
                    tasks = list(answer.get("tasks") or [])[:taken]
                    backoff = refusals = throttled = 0
                    self._reachability.succeeded()
                except asyncio.CancelledError:
                    request.cancel()
                    await self._slots.release(taken)
                    raise
                except Exception as err:  # a poller survives anything but refused credentials
                    await self._slots.release(taken)
                    if isinstance(err, ResourceExhaustedError):
                        # The namespace has as many polls open on that frontend as it may: not
                        # a refusal of this worker, and not an outage; wait as the frontend asks.
                        # Doubling from there while it lasts, up to 10 s, as Temporal's SDKs back
                        # off on ResourceExhausted: many pollers must not keep the frontend busy refusing.
                        refusals = 0
                        throttled += 1
                        # Spread by up to JITTER, never sooner than asked.
                        wait = min(max(err.retry_after, 0.1) * 2 ** min(throttled - 1, 10)
                                   * random.uniform(1, 1 + JITTER), _MAX_BACKOFF_S)
                        _log.info("poll %s throttled (%s); retrying in %.1fs", self._path, err.message, wait)
                        await asyncio.sleep(wait)
                        continue
                    throttled = 0
                    backoff = min(_MAX_BACKOFF_S, max(0.1, backoff * 2))
                    # A frontend that asks for a wait (a 503's Retry-After) gets it, within the cap.
                    wait = min(_MAX_BACKOFF_S, max(jittered(backoff), asked_wait(err, _MAX_BACKOFF_S)
                                                   if isinstance(err, RPCError) else 0.0))
                    if isinstance(err, RPCError) and err.status in (401, 403):
                        refusals += 1
                        if refusals >= REFUSALS_BEFORE_STOPPING:
                            raise WorkerRefusedError(err, self._path, refusals) from err
                    else:
                        refusals = 0  # in a row: another failure breaks the row
                    if isinstance(err, RPCError) and err.retryable:
                        self._reachability.failed(self._path, err, wait)
                    else:
                        _log.warning("poll %s failed (%r); retrying in %.1fs", self._path, err, wait)
                    await asyncio.sleep(wait)
                    continue
                unused = taken - len(tasks)
                if unused > 0:
                    await self._slots.release(unused)
                self._limits.observed(taken, len(tasks), self._slots.size - self._slots.free)
                await self._slots.resize(self._limits.concurrency())
                if tasks and self._slots.free > 0:
                    held = tasks  # the next acquire_some takes a free slot without waiting
                elif tasks:
                    self._start(tasks)
                    await self._yield_to_writes()
        finally:
            if held:  # cancelled before they started: their slots go back
                await self._slots.release(len(held))

    def _start(self, tasks: list[Mapping[str, Any]]) -> None:
        """Start each task. Several: their answers are held until every one of them has run to
        its first wait (the release is queued behind their first steps), so each workflow of
        the answer wakes before the first answer's HTTP call is made, and the answers leave
        together instead of the first ones alone (answers.py)."""
        loop = asyncio.get_running_loop()
        held = self._answers if len(tasks) > 1 else None
        if held is not None:
            held.hold()
        for task in tasks:
            handle = loop.create_task(self._run_one(task))
            self.running.add(handle)
            handle.add_done_callback(self._forget, context=_CALLBACK_CONTEXT)
        if held is not None:
            loop.call_soon(held.release)

    @staticmethod
    async def _yield_to_writes() -> None:
        """Two loop turns: what was just started runs up to its first wait, so a quick task
        has its answer (or a poll its request) on the wire. Two: before Python 3.12, aiohttp
        writes a request body from a task of its own."""
        for _ in range(2):
            await asyncio.sleep(0)

    async def _run_one(self, task: Mapping[str, Any]) -> None:
        try:
            await self._process(task)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad task must not stop the worker
            _log.exception("processing task %s failed", task.get("task_token", "?"))
        finally:
            await self._slots.release(1)
