"""Waiting in tests: ``eventually`` looks until a condition holds and raises when it does not.

Tests wait with ``eventually`` instead of fixed sleeps or hand-written polling loops, so a
slow machine makes a test slower, never wrong, and a condition that never holds fails with
the last value seen. A negative check ("no second copy arrives") is ``stays``: the
condition is looked at for the whole time given, not once after a sleep. ``elapse`` is the
one fixed wait, for when time passing is what the test is about. Sleeps inside the
workflows and activities under test are their behaviour and stay as they are.

``start_dev`` runs `kadence dev` as a child on ports it binds itself and reads them back.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, overload

import pytest

T = TypeVar("T")


class NotYet(AssertionError):
    """The condition did not hold within the time given."""


# The value returned is the check's first truthy one, so never None: a check answering
# ``X | None`` (not yet) gives an ``X``.
@overload
async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = ..., every: float = ...,
                     what: str = ...) -> T: ...
@overload
async def eventually(check: Callable[[], T | None], *, timeout: float = ..., every: float = ...,
                     what: str = ...) -> T: ...
async def eventually(check: Callable[[], T | Awaitable[T | None] | None], *, timeout: float = 10.0,
                     every: float = 0.05, what: str = "condition") -> T:
    """Call ``check`` every ``every`` seconds until it returns a truthy value (returned) or
    ``timeout`` seconds pass (NotYet, naming the last value or exception).

    An exception from ``check`` (an assertion, a connection refused while a server restarts)
    counts as "not yet"; the last one is chained to the failure. An awaitable check has what
    is left of ``timeout`` (at least ``every``) to finish: one that hangs (a call that never
    answers) fails the wait, naming the check, instead of holding the test past its timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        bound = asyncio.timeout(max(deadline - loop.time(), every))
        try:
            value = check()
            if inspect.isawaitable(value):
                async with bound:
                    value = await value
            if value:
                return value
            last, error = value, None
        except (AssertionError, OSError, LookupError, ValueError, RuntimeError) as exc:
            if bound.expired():  # our bound, not a timeout of the check's own
                raise NotYet(f"{what} did not hold within {timeout} s: its check {_named(check)} hung"
                             f" (last: {last!r})") from error
            last, error = exc, exc
        if loop.time() >= deadline:
            raise NotYet(f"{what} did not hold within {timeout} s (last: {last!r})") from error
        await asyncio.sleep(every)


def _named(check: Callable[..., object]) -> str:
    """Where a check is defined: a lambda's name says little."""
    code = getattr(check, "__code__", None)
    name = getattr(check, "__qualname__", repr(check))
    return name if code is None else f"{name} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"


@overload
async def stays(check: Callable[[], Awaitable[object]], *, for_seconds: float, every: float = ...,
                what: str = ...) -> None: ...
@overload
async def stays(check: Callable[[], object], *, for_seconds: float, every: float = ...,
                what: str = ...) -> None: ...
async def stays(check: Callable[[], object], *, for_seconds: float, every: float = 0.05,
                what: str = "condition") -> None:
    """Assert that ``check`` holds (returns a truthy value, raises nothing) every ``every``
    seconds for the whole of ``for_seconds``: the negative check ("nothing else arrives",
    "no second copy shows up") that a fixed sleep followed by one look used to make.

    Fails (AssertionError naming the value or chaining the exception) at the first look
    where it does not hold; a check passed for a second of time proves nothing beyond it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_seconds
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except AssertionError as exc:
            raise AssertionError(f"{what} stopped holding: {exc}") from exc
        if not value:
            raise AssertionError(f"{what} stopped holding (value: {value!r})")
        if loop.time() >= deadline:
            return
        await asyncio.sleep(every)


async def elapse(seconds: float) -> None:
    """Let wall-clock time pass where its passing is the scenario itself: a fault that lasts
    a while, a record that reaches history late, a sampling period. Never to wait for
    something to happen (``eventually``) or to not happen (``stays``).
    """
    await asyncio.sleep(seconds)


# ---- `kadence dev` as a child process --------------------------------------------------------

@dataclass(frozen=True)
class Dev:
    """A running `kadence dev` child: its process, output file, and the addresses it bound."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str  # the API, http://127.0.0.1:PORT
    kafka: str  # the broker's bootstrap, 127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def kafka_port(self) -> int:
        return int(self.kafka.rsplit(":", 1)[1])


def dev_command(data: Path, *, port: int = 0, kafka_port: int = 0, shards: int | None = None) -> list[str]:
    return [sys.executable, "-m", "kadence.cli", "dev", "--data-dir", str(data), "--port", str(port),
            "--kafka-port", str(kafka_port), *(["--shards", str(shards)] if shards is not None else [])]


async def start_dev(data: Path, log: Path, *, port: int = 0, kafka_port: int = 0, shards: int | None = 3,
                    env: dict[str, str] | None = None, timeout: float = 60.0) -> Dev:
    """`kadence dev` started, once it says it runs; ``env``: settings (KADENCE_*) of its own.

    Ports 0 (the default) let it bind ports the system chooses, read back from what it prints:
    a port picked free beforehand may be taken by another process before the child binds it.
    Name ports only where a test is about them (the same ones again after a restart)."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(dev_command(data, port=port, kafka_port=kafka_port, shards=shards),
                                   stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def running() -> re.Match[str] | None:
        if process.poll() is not None:  # fails at once: an AssertionError would be retried
            pytest.fail(f"kadence dev exited: {log.read_text()[-2000:]}")
        text = log.read_text()
        return _DEV_RUNNING.search(text) if "Press Ctrl-C" in text else None

    try:
        said = await eventually(running, timeout=timeout, every=0.1, what="kadence dev up")
    except BaseException:
        stop_dev(process)
        raise
    assert said is not None  # eventually returns a truthy value
    return Dev(process, log, said["api"], said["kafka"])


_DEV_RUNNING = re.compile(r"API: +(?P<api>http://\S+).*\n\s+Kafka: +(?P<kafka>\S+)")


def stop_dev(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT) -> None:
    """Stop it as a user would (Ctrl-C by default); killed if it has not ended within 30 s."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
