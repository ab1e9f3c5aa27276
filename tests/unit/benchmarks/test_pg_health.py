"""The sustained run's reading of PostgreSQL's tables (benchmarks/pg_health.py), against the
session's real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from benchmarks.pg_health import TableHealth, summary, table_health
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


async def test_dead_rows_of_a_table_written_and_deleted_are_read_and_summed(fresh_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute("CREATE TABLE churn (id int PRIMARY KEY, body text) WITH (autovacuum_enabled = off)")
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO churn SELECT g, repeat('x', 200) FROM generate_series(1, 1000) g")
        await conn.execute("INSERT INTO kept SELECT g FROM generate_series(1, 10) g")
        await conn.execute("DELETE FROM churn WHERE id > 250")
    finally:
        await conn.close()

    async def read() -> dict[str, TableHealth]:
        tables = {t.table: t for t in await table_health(fresh_dsn)}
        assert tables["churn"].dead == 750 and tables["kept"].live == 10  # the statistics lag a moment
        return tables

    tables = await eventually(read, timeout=20, what="the statistics of both tables")
    churn = tables["churn"]
    assert (churn.live, churn.vacuums) == (250, 0)
    assert churn.dead_ratio == pytest.approx(0.75)
    assert churn.size_mb > tables["kept"].size_mb
    line = summary(list(tables.values()))
    assert (line["live"], line["dead"], line["worst_table"]) == (260, 750, "churn")
    assert line["dead_ratio"] == pytest.approx(750 / 1010, abs=1e-4)


def test_an_empty_database_sums_to_nothing() -> None:
    assert summary([]) == {"size_mb": 0, "live": 0, "dead": 0, "dead_ratio": 0.0, "worst_table": None,
                           "worst_dead_ratio": 0.0}
    assert TableHealth("t", 0.0, 0, 0, 0).dead_ratio == 0.0
