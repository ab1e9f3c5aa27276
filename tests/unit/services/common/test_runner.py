"""A service whose PostgreSQL or broker cannot be used at start says which, in one line."""

from __future__ import annotations

import socket

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from services.common import db, kafka, runner
from services.common.config import Settings


def _settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KADENCE_DATABASE_URL", "postgresql://kadence:s3cret@db.invalid/kadence")
    monkeypatch.setenv("KADENCE_KAFKA_BOOTSTRAP", "kafka.invalid:9092")
    return Settings.from_env()


async def _migrated(dsn: str) -> list[str]:
    return []


async def _topics_made(*args: object, **kwargs: object) -> list[str]:
    return []


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-2, "Name or service not known"),
    asyncpg.InvalidPasswordError("password authentication failed for user \"kadence\""),
])
async def test_an_unusable_database_ends_the_program_naming_it(error: Exception,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(dsn: str) -> list[str]:
        raise error
    monkeypatch.setattr(db, "migrate", refused)
    monkeypatch.setattr(kafka, "ensure_topics", _topics_made)
    with pytest.raises(SystemExit) as exited:
        await runner.prepare(_settings(monkeypatch), "history")
    message = str(exited.value.code)
    assert message.startswith("history: cannot use PostgreSQL at postgresql://kadence:***@db.invalid/kadence"
                              " (KADENCE_DATABASE_URL): ")
    assert type(error).__name__ in message
    assert "s3cret" not in message


async def test_an_unreachable_broker_ends_the_program_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(*args: object, **kwargs: object) -> list[str]:
        raise KafkaConnectionError("Unable to bootstrap from [('kafka.invalid', 9092)]")
    monkeypatch.setattr(db, "migrate", _migrated)
    monkeypatch.setattr(kafka, "ensure_topics", unreachable)
    with pytest.raises(SystemExit) as exited:
        await runner.prepare(_settings(monkeypatch), "matching")
    assert str(exited.value.code).startswith(
        "matching: cannot reach the Kafka broker at kafka.invalid:9092 (KADENCE_KAFKA_BOOTSTRAP): ")


async def test_a_bug_is_not_mistaken_for_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(dsn: str) -> list[str]:
        raise KeyError("a bug")
    monkeypatch.setattr(db, "migrate", broken)
    with pytest.raises(KeyError):
        await runner.prepare(_settings(monkeypatch), "history")
