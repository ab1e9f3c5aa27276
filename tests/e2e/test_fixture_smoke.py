"""The fixtures themselves: migrations apply once, topics are created once."""

from __future__ import annotations

import pytest

from services.common import db, kafka

pytestmark = pytest.mark.timeout(60)


async def test_migrations_and_topics_are_idempotent(fresh_dsn: str, broker) -> None:
    every = sorted(path.stem for path in db.migrations_dir().glob("*.sql"))
    assert every[0] == "0001_init"
    assert await db.migrate(fresh_dsn) == every
    assert await db.migrate(fresh_dsn) == []
    created = await kafka.ensure_topics(broker.bootstrap, 4, 4)
    assert set(created) == {kafka.REQUESTS, kafka.HISTORY, kafka.TASKS, kafka.REPLIES, kafka.DLQ}
    assert await kafka.ensure_topics(broker.bootstrap, 4, 4) == []
