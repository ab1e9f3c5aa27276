import asyncpg, pytest
from services.common import db, kafka
pytestmark = pytest.mark.timeout(60)
async def test_fixture_smoke(fresh_dsn, broker):
    assert await db.migrate(fresh_dsn) == ["0001_init"]
    assert await db.migrate(fresh_dsn) == []
    created = await kafka.ensure_topics(broker.bootstrap, 4, 4)
    assert kafka.REQUESTS in created
