"""The sustained run's reading of PostgreSQL's tables (benchmarks/pg_health.py), against the
session's real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from benchmarks.pg_health import ServerActivity, TableHealth, server_activity, summary, table_health
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


async def test_the_server_activity_of_writes_and_a_checkpoint_shows_in_the_difference(fresh_dsn: str) -> None:
    before = await server_activity(fresh_dsn)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute("CREATE TABLE written (id int PRIMARY KEY, body text)")
        await conn.execute("INSERT INTO written SELECT g, repeat('x', 500) FROM generate_series(1, 2000) g")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()

    async def read() -> dict[str, object]:
        line = (await server_activity(fresh_dsn)).per_workflow(before, 100)
        assert line["checkpoints_req"] is not None and int(str(line["checkpoints_req"])) >= 1
        return line

    line = await eventually(read, timeout=20, what="the checkpoint in the statistics")
    assert float(str(line["wal_kb_per_wf"])) > 10  # 2,000 rows of 500 bytes over 100 "workflows"
    assert line["autovacuums"] is not None and int(str(line["autovacuums"])) >= 0


def test_a_difference_is_shared_out_per_workflow() -> None:
    before = ServerActivity(wal_bytes=1024, blks_read=10, blks_hit=90, autovacuums=1, checkpoints_timed=2,
                            checkpoints_req=0, buffers_backend=5)
    after = ServerActivity(wal_bytes=1024 + 100 * 2048, blks_read=60, blks_hit=290, autovacuums=3,
                           checkpoints_timed=2, checkpoints_req=1, buffers_backend=105)
    assert after.per_workflow(before, 100) == {
        "wal_kb_per_wf": 2.0, "blks_read_per_wf": 0.5, "hit_ratio": 0.8, "backend_writes_per_wf": 1.0,
        "checkpoints_timed": 0, "checkpoints_req": 1, "autovacuums": 2}
    # A server without the checkpoint counters (PostgreSQL 17 moved them): None, not zero.
    bare = ServerActivity(wal_bytes=0, blks_read=0, blks_hit=0, autovacuums=0)
    line = bare.per_workflow(bare, 1)
    assert (line["checkpoints_req"], line["backend_writes_per_wf"], line["hit_ratio"]) == (None, None, None)
