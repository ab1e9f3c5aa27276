"""The compiled list queries run on the real PostgreSQL and select exactly what the query
means: random queries over random rows, checked against an evaluation in Python (SQL's
three-valued logic included), and keyset paging gives every match once."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from services.common import db
from services.common.visibility import query as q
from services.common.visibility import sql
from services.common.visibility.reads import VisibilityReads
from services.common.visibility.sql import AttributeType

pytestmark = pytest.mark.timeout(120)

CUSTOM = {"CustomerId": AttributeType.KEYWORD, "Priority": AttributeType.INT, "Vip": AttributeType.BOOL}
TYPES = ["Order", "Refund", "Ship"]
STATUSES = ["Running", "Completed", "Failed"]
BASE = 1_796_083_200_000  # 2026-12-01T00:00:00Z


def _rows(rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(60):
        status = rng.choice(STATUSES)
        start = BASE + rng.randrange(0, 10) * 60_000 if rng.random() > 0.1 else None
        attributes = {k: v for k, v in (("CustomerId", rng.choice(["c-1", "c-2", "d-1"])),
                                        ("Priority", rng.randrange(0, 4)), ("Vip", rng.random() > 0.5))
                      if rng.random() > 0.3}
        rows.append({"workflow_id": f"wf-{i % 20}", "run_id": f"run-{i:03d}", "workflow_type": rng.choice(TYPES),
                     "task_queue": rng.choice(["q1", "q2"]), "status": status, "start_time": start,
                     "close_time": None if status == "Running" or start is None else start + rng.randrange(1, 5),
                     "history_length": rng.randrange(1, 30), "search_attributes": attributes or None})
    return rows


@pytest.fixture
async def pool(fresh_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    await db.migrate(fresh_dsn)
    p = await db.create_pool(fresh_dsn, max_size=2)
    try:
        yield p
    finally:
        await p.close()


# ---- a Python reading of the language, as the oracle -------------------------------------------

COLUMNS = {name: b.column for name, b in sql.BUILT_INS.items()}


def _get(row: dict[str, Any], name: str) -> Any:
    if name in COLUMNS:
        return row[COLUMNS[name]]
    return (row["search_attributes"] or {}).get(name)


def _value(name: str, v: q.Value) -> Any:
    kind = sql.BUILT_INS[name].type if name in sql.BUILT_INS else CUSTOM[name]
    return sql.to_millis(sql.parse_datetime(str(v))) if kind is AttributeType.DATETIME else v


def _eval(expr: q.Expr, row: dict[str, Any]) -> bool | None:
    """True, False or None (SQL's unknown)."""
    if isinstance(expr, q.And):
        values = [_eval(e, row) for e in expr.items]
        return False if False in values else (None if None in values else True)
    if isinstance(expr, q.Or):
        values = [_eval(e, row) for e in expr.items]
        return True if True in values else (None if None in values else False)
    have = _get(row, expr.name)
    if isinstance(expr, q.IsNull):
        return (have is not None) if expr.negated else (have is None)
    if have is None:
        return None
    if isinstance(expr, q.Comparison):
        want = _value(expr.name, expr.value)
        return {"=": have == want, "!=": have != want, "<": have < want, "<=": have <= want, ">": have > want,
                ">=": have >= want}[expr.op.value]
    if isinstance(expr, q.In):
        found = have in [_value(expr.name, v) for v in expr.values]
        return not found if expr.negated else found
    if isinstance(expr, q.Between):
        inside = _value(expr.name, expr.low) <= have <= _value(expr.name, expr.high)
        return not inside if expr.negated else inside
    assert isinstance(expr, q.StartsWith)
    return str(have).startswith(str(expr.prefix))


def _time(rng: random.Random) -> str:
    ms = BASE + rng.randrange(-1, 11) * 60_000
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("'%Y-%m-%dT%H:%M:%SZ'")


def _predicate(rng: random.Random) -> str:
    choice = rng.randrange(9)
    op = rng.choice(["=", "!=", "<", "<=", ">", ">="])
    if choice == 0:
        return f"WorkflowType {rng.choice(['=', '!='])} '{rng.choice(TYPES)}'"
    if choice == 1:
        return f"ExecutionStatus IN ({', '.join(repr(s) for s in rng.sample(STATUSES, rng.randrange(1, 3)))})"
    if choice == 2:
        return f"StartTime {op} {_time(rng)}"
    if choice == 3:
        return f"CloseTime IS {'NOT ' if rng.random() > 0.5 else ''}NULL"
    if choice == 4:
        return f"HistoryLength {'NOT ' if rng.random() > 0.5 else ''}BETWEEN {rng.randrange(0, 15)} AND {rng.randrange(10, 30)}"
    if choice == 5:
        return f"WorkflowId STARTS_WITH 'wf-{rng.randrange(0, 3)}'"
    if choice == 6:
        return f"CustomerId {rng.choice(['=', '!='])} '{rng.choice(['c-1', 'c-2', 'd-1'])}'"
    if choice == 7:
        return f"Priority {op} {rng.randrange(0, 4)}"
    return f"Vip = {rng.choice(['true', 'false'])}"


def _expression(rng: random.Random, depth: int = 0) -> str:
    if depth > 2 or rng.random() < 0.4:
        return _predicate(rng)
    joiner = rng.choice([" AND ", " OR "])
    return "(" + joiner.join(_expression(rng, depth + 1) for _ in range(rng.randrange(2, 4))) + ")"


async def test_random_queries_select_what_they_mean(pool: asyncpg.Pool) -> None:
    rng = random.Random(18)
    rows = _rows(rng)
    await pool.executemany(
        "INSERT INTO visibility (namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time,"
        " close_time, history_length, last_event_id, search_attributes)"
        " VALUES ('default', $1, $2, $3, $4, $5, $6, $7, $8, $8, $9::jsonb)",
        [(r["workflow_id"], r["run_id"], r["workflow_type"], r["task_queue"], r["status"], r["start_time"],
          r["close_time"], r["history_length"],
          None if r["search_attributes"] is None else orjson.dumps(r["search_attributes"]).decode()) for r in rows])
    await pool.executemany("INSERT INTO search_attributes (namespace, name, type) VALUES ('default', $1, $2)",
                           [(name, kind.value) for name, kind in CUSTOM.items()])
    reads = VisibilityReads(pool)
    sizes = []
    for _ in range(150):
        text = _expression(rng)
        expected = {r["run_id"] for r in rows if _eval(q.parse(text).where, r) is True}  # type: ignore[arg-type]
        found: list[str] = []
        token = None
        while True:
            page = await reads.list("default", text, page_size=7, token=token)
            found += [e["run_id"] for e in page.executions]
            if page.next_page_token is None:
                break
            token = page.next_page_token
        assert len(found) == len(set(found)), text
        assert set(found) == expected, text
        assert (await reads.count("default", text))["count"] == len(expected), text
        sizes.append(len(expected))
    assert sum(0 < n < len(rows) for n in sizes) > 75  # most queries select some rows, not all


async def test_every_order_pages_through_every_row_once_in_order(pool: asyncpg.Pool) -> None:
    rows = _rows(random.Random(7))
    await pool.executemany(
        "INSERT INTO visibility (namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time,"
        " close_time, history_length, last_event_id) VALUES ('default', $1, $2, $3, $4, $5, $6, $7, $8, $8)",
        [(r["workflow_id"], r["run_id"], r["workflow_type"], r["task_queue"], r["status"], r["start_time"],
          r["close_time"], r["history_length"]) for r in rows])
    reads = VisibilityReads(pool)
    for order in ("", "ORDER BY StartTime", "ORDER BY CloseTime DESC", "ORDER BY WorkflowType, StartTime DESC",
                  "ORDER BY HistoryLength DESC, WorkflowId", "ORDER BY ExecutionStatus, RunId DESC"):
        everything = (await reads.list("default", order, page_size=1000, token=None)).executions
        paged: list[dict[str, Any]] = []
        token = None
        while True:
            page = await reads.list("default", order, page_size=4, token=token)
            paged += page.executions
            token = page.next_page_token
            if token is None:
                break
        assert [e["run_id"] for e in paged] == [e["run_id"] for e in everything], order
        assert len(paged) == len(rows)


async def test_data_the_database_refuses_is_left_out_without_holding_the_batch(pool: asyncpg.Pool) -> None:
    """A NUL character (which jsonb cannot hold) in one run's attributes, written by a producer
    that bypassed the frontend: that run's row is written without them, the others whole."""
    from kadence_protocol.enums import RunStatus
    from services.visibility import store
    from services.visibility.projection import RunUpdate

    good = RunUpdate("default", "wf-good", "run-good", 3, 1000, workflow_type="T", task_queue="q", start_time=1000,
                     execution_time=1000, status=RunStatus.RUNNING, search_attributes={"CustomerId": "c-1"})
    bad = RunUpdate("default", "wf-bad", "run-bad", 2, 1000, workflow_type="T", task_queue="q", start_time=1000,
                    execution_time=1000, status=RunStatus.RUNNING, search_attributes={"CustomerId": "c\x00"})
    left_out = await store.apply(pool, [good, bad])
    assert len(left_out) == 1 and "run run-bad: search attributes left out" in left_out[0]
    rows = {r["run_id"]: r for r in await pool.fetch("SELECT * FROM visibility")}
    assert orjson.loads(rows["run-good"]["search_attributes"]) == {"CustomerId": "c-1"}
    assert rows["run-bad"]["search_attributes"] is None and rows["run-bad"]["last_event_id"] == 2


async def test_a_batch_written_a_slice_per_statement_is_written_whole_or_run_by_run(pool: asyncpg.Pool) -> None:
    """A batch of more runs than a statement takes goes in slices, in one transaction: every
    row is written; a refused run in one slice rolls the lot back, and the batch is then
    written run by run as an unsliced one is."""
    from kadence_protocol.enums import RunStatus
    from services.visibility import store
    from services.visibility.projection import RunUpdate

    def update(i: int, customer: str) -> RunUpdate:
        return RunUpdate("default", f"wf-{i}", f"run-{i}", 3, 1000, workflow_type="T", task_queue="q",
                         start_time=1000, execution_time=1000, status=RunStatus.RUNNING,
                         search_attributes={"CustomerId": customer})

    assert await store.apply(pool, [update(i, f"c-{i}") for i in range(5)], slice_runs=2) == []
    rows = {r["run_id"]: r for r in await pool.fetch("SELECT * FROM visibility")}
    assert {run: orjson.loads(r["search_attributes"])["CustomerId"] for run, r in rows.items()} == {
        f"run-{i}": f"c-{i}" for i in range(5)}
    await pool.execute("DELETE FROM visibility")
    left_out = await store.apply(pool, [update(i, "c\x00" if i == 3 else f"c-{i}") for i in range(5)], slice_runs=2)
    assert len(left_out) == 1 and "run run-3: search attributes left out" in left_out[0]
    rows = {r["run_id"]: r for r in await pool.fetch("SELECT * FROM visibility")}
    assert sorted(rows) == [f"run-{i}" for i in range(5)] and rows["run-3"]["search_attributes"] is None
    assert orjson.loads(rows["run-4"]["search_attributes"]) == {"CustomerId": "c-4"}


async def test_a_memo_too_deep_to_write_is_left_out_and_the_consumer_goes_on(pool: asyncpg.Pool) -> None:
    """orjson writes at most 255 levels; a deeper memo (stored by history before memos were
    limited, or by a producer outside) raised TypeError out of the write, which killed the
    visibility consumer and with it the process, again at every restart."""
    from services.visibility import projection, store

    deep = "[" * 300 + "]" * 300
    started = {"event_id": 1, "event_time": 1000, "event_type": "WorkflowExecutionStarted",
               "attributes": {"workflow_type": "T", "task_queue": "q", "memo": '{"a":' + deep + "}"}}
    fine = {"event_id": 1, "event_time": 1000, "event_type": "WorkflowExecutionStarted",
            "attributes": {"workflow_type": "T", "task_queue": "q", "memo": '{"a":1}'}}
    updates = projection.fold([{"namespace": "default", "workflow_id": "wf-deep", "run_id": "run-deep", "event": started},
                               {"namespace": "default", "workflow_id": "wf-fine", "run_id": "run-fine", "event": fine}])
    left_out = await store.apply(pool, updates)
    assert len(left_out) == 1 and "run run-deep: search attributes left out, memo too" in left_out[0]
    rows = {r["run_id"]: r for r in await pool.fetch("SELECT run_id, memo FROM visibility")}
    assert rows["run-deep"]["memo"] is None and orjson.loads(rows["run-fine"]["memo"]) == {"a": 1}


async def test_the_memo_of_a_start_is_kept_in_the_row_and_later_batches_keep_it(pool: asyncpg.Pool) -> None:
    from services.visibility import projection, store

    started = {"event_id": 1, "event_time": 1000, "event_type": "WorkflowExecutionStarted",
               "attributes": {"workflow_type": "T", "task_queue": "q", "memo": '{"note":"kept","n":2}'}}
    closed = {"event_id": 2, "event_time": 2000, "event_type": "WorkflowExecutionCompleted", "attributes": {}}
    record = {"namespace": "default", "workflow_id": "wf-memo", "run_id": "run-memo"}
    assert await store.apply(pool, projection.fold([{**record, "event": started}])) == []
    assert await store.apply(pool, projection.fold([{**record, "event": closed}])) == []
    row = await pool.fetchrow("SELECT memo, status FROM visibility WHERE run_id = 'run-memo'")
    assert (orjson.loads(row["memo"]), row["status"]) == ({"note": "kept", "n": 2}, "Completed")
    reads = VisibilityReads(pool)
    [listed] = (await reads.list("default", "WorkflowId = 'wf-memo'", page_size=10, token=None)).executions
    assert listed["memo"] == {"note": "kept", "n": 2}


async def test_migration_0014_fills_the_memo_of_rows_projected_before_it(pool: asyncpg.Pool, fresh_dsn: str) -> None:
    for run_id, memo in (("r-obj", '{"a":1}'), ("r-none", None), ("r-bad", "not json"), ("r-list", "[1]")):
        state = orjson.dumps({"memo": memo})
        await pool.execute(
            "INSERT INTO executions (namespace, workflow_id, run_id, shard_id, workflow_type, task_queue, status,"
            " start_time, next_event_id, state) VALUES ('default', $1, $1, 0, 'T', 'q', 'Running', 1, 2, $2)",
            run_id, state)
        await pool.execute("INSERT INTO visibility (namespace, workflow_id, run_id, status, last_event_id)"
                           " VALUES ('default', $1, $1, 'Running', 1)", run_id)
    await pool.execute("DELETE FROM schema_migrations WHERE version = '0014_visibility_memo'")
    assert await db.migrate(fresh_dsn) == ["0014_visibility_memo"]
    rows = {r["run_id"]: r["memo"] for r in await pool.fetch("SELECT run_id, memo FROM visibility")}
    assert {k: None if v is None else orjson.loads(v) for k, v in rows.items()} == {
        "r-obj": {"a": 1}, "r-none": None, "r-bad": None, "r-list": None}
