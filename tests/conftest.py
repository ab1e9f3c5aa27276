"""Fixtures: one real PostgreSQL for the whole run, a real Tansu broker per test.

Each test that needs isolation gets its own database (``fresh_dsn``) on the session's
server, and its own broker (``broker``, about 0.3 s to start), both on this machine only.
``module_broker`` and ``module_dsn`` are the same, shared by the tests of one module
(tests/e2e/conftest.py ``module_cluster``).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from services.common.embedded import EmbeddedBroker, EmbeddedPostgres


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


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """A new Tansu broker on 127.0.0.1 for one test, stopped by its PID afterwards."""
    b = await EmbeddedBroker.start()
    try:
        yield b
    finally:
        b.stop()


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
        b.stop()
