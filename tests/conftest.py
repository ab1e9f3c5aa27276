"""Fixtures: one real PostgreSQL for the whole run, a real Tansu broker per test.

Each test that needs isolation gets its own database (``fresh_dsn``) on the session's
server, and its own broker (``broker``, about 0.1 s to start, its stop finished in the
background), both on this machine only.
``module_broker`` and ``module_dsn`` are the same, shared by the tests of one module
(tests/e2e/conftest.py ``module_cluster``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.helpers import NotYet, eventually


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    with tempfile.TemporaryDirectory(prefix="kadence-test-pg-") as d:
        pg = EmbeddedPostgres.start(Path(d) / "data")
        try:
            yield pg
        finally:
            pg.stop()


@asynccontextmanager
async def new_database(postgres: EmbeddedPostgres, prefix: str = "t") -> AsyncIterator[str]:
    """A new, empty database on the session server; its DSN, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, query = postgres.dsn.partition("?")
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    finally:
        admin = await asyncpg.connect(postgres.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def fresh_dsn(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A new, empty database for one test."""
    async with new_database(postgres) as dsn:
        yield dsn


# Tansu, told to stop just after its last client left, takes about 0.4 s to end (it ends at
# once when no client ever came): every test with a broker of its own waited that out in its
# teardown. The stop (SIGTERM, SIGKILL after the grace) runs in a thread instead, and the
# session waits for every such thread before it ends, so no broker outlives the run.
_BROKERS_STOPPING: list[threading.Thread] = []


def _stop_in_background(b: EmbeddedBroker) -> None:
    thread = threading.Thread(target=b.stop, name=f"stop-tansu-{b.port}", daemon=True)
    thread.start()
    _BROKERS_STOPPING[:] = [*(t for t in _BROKERS_STOPPING if t.is_alive()), thread]


@pytest.fixture(scope="session", autouse=True)
def _brokers_stopped() -> Iterator[None]:
    yield
    while _BROKERS_STOPPING:
        _BROKERS_STOPPING.pop().join()


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """A new Tansu broker on 127.0.0.1 for one test, stopped by its PID afterwards."""
    b = await EmbeddedBroker.start()
    try:
        yield b
    finally:
        _stop_in_background(b)


@pytest.fixture(scope="module")
async def module_dsn(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """A new, empty database shared by the tests of one module."""
    async with new_database(postgres) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def module_broker() -> AsyncIterator[EmbeddedBroker]:
    """A new Tansu broker shared by the tests of one module."""
    b = await EmbeddedBroker.start()
    try:
        yield b
    finally:
        _stop_in_background(b)


# pytest-timeout's dump shows threads, and every test here waits in one event loop's select:
# a few seconds before the timeout, say where each of the loop's tasks is waiting instead.
_SESSION_LOOP: list[asyncio.AbstractEventLoop] = []
_DUMP_BEFORE_TIMEOUT_S = 5.0


@pytest.fixture(scope="session", autouse=True)
async def _session_loop() -> AsyncIterator[None]:
    _SESSION_LOOP.append(asyncio.get_running_loop())
    yield


# A Kafka client a test module leaves running retries its broker, stopped with the module, for
# the rest of the session, and its error records land in later tests' logs (stop 23's CI): each
# module's leftovers are named at the end of the run, with the module that left them.
_KAFKA_LEFT_RUNNING: dict[str, list[str]] = {}


def _kafka_tasks(since: set[asyncio.Task[Any]]) -> list[str]:
    """The aiokafka tasks started since ``since`` that still run, named by their coroutines."""
    return sorted(f"{t.get_coro().__qualname__}" for t in asyncio.all_tasks() - since  # type: ignore[union-attr]
                  if not t.done() and "aiokafka" in getattr(getattr(t.get_coro(), "cr_code", None), "co_filename", ""))


@pytest.fixture(scope="module", autouse=True)
async def _kafka_clients_stopped(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    try:  # the tasks of what was just stopped end within a few loop turns
        await eventually(lambda: not _kafka_tasks(before), timeout=2, what="no aiokafka task left")
    except NotYet:
        _KAFKA_LEFT_RUNNING[request.node.nodeid] = _kafka_tasks(before)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _KAFKA_LEFT_RUNNING:
        terminalreporter.section("Kafka clients left running (their tasks), by the test module that left them")
        for module, tasks in _KAFKA_LEFT_RUNNING.items():
            terminalreporter.write_line(f"{module}: {', '.join(tasks)}")


def _awaiting(coro: object) -> list[str]:
    """Where a task's coroutine chain waits, outermost first."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return lines


def _dump_tasks(nodeid: str) -> None:
    if not _SESSION_LOOP:
        return
    for _ in range(5):  # the set may change under us while the loop runs
        try:
            tasks = list(asyncio.all_tasks(_SESSION_LOOP[0]))
            break
        except RuntimeError:
            continue
    else:
        return
    out = [f"\n===== {nodeid}: close to its timeout; {len(tasks)} tasks of the event loop wait at ====="]
    for task in tasks:
        out.append(f"  {task.get_name()}:")
        out.extend(_awaiting(task.get_coro()))
    print("\n".join(out), file=sys.stderr, flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timer = None
    if timeout > _DUMP_BEFORE_TIMEOUT_S:
        timer = threading.Timer(timeout - _DUMP_BEFORE_TIMEOUT_S, _dump_tasks, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
