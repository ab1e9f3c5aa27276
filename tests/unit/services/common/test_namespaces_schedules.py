"""Namespaces (durations, the cached registry) and schedules (specs, due times, ids) without services."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from kadence_protocol import avro
from services.common.namespaces import (
    NamespaceRegistry,
    format_duration_ms,
    parse_duration_ms,
)
from services.common.schedules import (
    OverlapPolicy,
    ScheduleAction,
    ScheduleDefinition,
    ScheduleError,
    ScheduleSpec,
    cron_schedule_id,
    due_times,
    iso_ms,
    iso_utc,
    request_id_for,
    workflow_id_for,
)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_durations_read_and_print_back() -> None:
    assert parse_duration_ms("30d") == 30 * 86_400_000
    assert parse_duration_ms(7) == 7 * 86_400_000  # a bare number is days
    assert parse_duration_ms("5", bare_unit="s") == 5000
    assert parse_duration_ms(" 90m ") == 90 * 60_000
    assert parse_duration_ms("2w") == 14 * 86_400_000
    for bad in ("soon", "-1d", "0d", "1.5h", True, None, 0):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    for ms in (1, 1500, 60_000, 90 * 60_000, 7 * 86_400_000):
        assert parse_duration_ms(format_duration_ms(ms)) == ms
    assert format_duration_ms(7 * 86_400_000) == "7d"


class _Pool:
    """Just enough of a pool for NamespaceStore.names()."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.fetches = 0

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, str]]:
        self.fetches += 1
        return [{"name": n} for n in self.names]


async def test_the_registry_reads_on_a_miss_and_remembers_a_miss_briefly() -> None:
    pool = _Pool({"default"})
    now = [100.0]
    registry = NamespaceRegistry(pool, negative_ttl=1.0, clock=lambda: now[0])
    assert await registry.is_registered("default") and pool.fetches == 1
    assert await registry.is_registered("default") and pool.fetches == 1  # known: no read
    assert not await registry.is_registered("shop") and pool.fetches == 2
    pool.names.add("shop")  # created by another frontend
    assert not await registry.is_registered("shop") and pool.fetches == 2  # within the negative TTL
    now[0] += 1.5
    assert await registry.is_registered("shop") and pool.fetches == 3
    registry.add("mine")  # created here: known at once
    assert await registry.is_registered("mine") and pool.fetches == 3


def test_interval_times_are_aligned_on_the_epoch_with_an_offset() -> None:
    spec = ScheduleSpec.from_json({"interval": "5s", "offset": "1s"})
    assert spec.next_after(_ms("2026-12-06T08:00:00+00:00")) == _ms("2026-12-06T08:00:01+00:00")
    assert spec.next_after(_ms("2026-12-06T08:00:01+00:00")) == _ms("2026-12-06T08:00:06+00:00")
    assert ScheduleSpec.from_json({"interval": 5}).interval_ms == 5000  # a bare number is seconds


def test_cron_times_follow_the_time_zone() -> None:
    spec = ScheduleSpec.from_json({"cron": "0 9 * * *", "time_zone": "Europe/Paris"})
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert spec.next_after(_ms("2026-12-06T08:30:00+00:00")) == _ms("2026-12-07T08:00:00+00:00")
    assert spec.next_after(_ms("2026-07-01T00:00:00+00:00")) == _ms("2026-07-01T07:00:00+00:00")


def test_jitter_is_deterministic_and_bounded() -> None:
    spec = ScheduleSpec.from_json({"interval": "1m", "jitter": "10s"})
    delays = [spec.jitter("s", t) for t in range(0, 6_000_000, 60_000)]
    assert delays == [spec.jitter("s", t) for t in range(0, 6_000_000, 60_000)]
    assert all(0 <= d <= 10_000 for d in delays) and len(set(delays)) > 1
    assert ScheduleSpec.from_json({"interval": "1m"}).jitter("s", 0) == 0


@pytest.mark.parametrize("raw", [{"interval": "5s", "jitter": "2m"}, {"cron": "* * * * *", "jitter": "1h"}])
def test_a_jitter_longer_than_the_gap_keeps_firings_in_order_and_loses_none(raw: dict[str, Any]) -> None:
    # As Temporal: the jitter never pushes a firing to or past the next nominal time, so
    # firings stay in order and none falls behind its successor's (and out of the window).
    spec = ScheduleSpec.from_json(raw)
    start = _ms("2026-12-06T08:00:00+00:00")
    nominal = [_next(spec, start)]
    while len(nominal) < 200:
        nominal.append(_next(spec, nominal[-1]))
    fires = [t + spec.jitter("s", t) for t in nominal]
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert len({f - t for f, t in zip(fires, nominal, strict=True)}) > 1  # still jittered
    started = missed = 0
    nxt: int | None = nominal[0]
    for now in range(start, nominal[-1], 1000):  # the scheduler looks every second
        assert nxt is not None
        due, lost, nxt = due_times(spec, "s", nxt, now, 60_000)
        started, missed = started + len(due), missed + lost
    assert missed == 0 and started > 150


def _next(spec: ScheduleSpec, ms: int) -> int:
    following = spec.next_after(ms)
    assert following is not None
    return following


def test_due_times_catch_up_within_the_window_only() -> None:
    spec = ScheduleSpec.from_json({"interval": "1s"})
    start = _ms("2026-12-06T08:00:00+00:00")
    # Ten seconds down, a five-second window: the five latest times run, the rest are missed.
    due, missed, nxt = due_times(spec, "s", start, start + 10_000, 5_000)
    assert due == [start + i * 1000 for i in range(5, 11)] and missed == 5 and nxt == start + 11_000
    # Nothing due yet.
    assert due_times(spec, "s", start, start - 1, 5_000) == ([], 0, start)
    # Years away: a bounded amount of work, only the window run.
    due, _, nxt = due_times(spec, "s", start, start + 365 * 86_400_000, 3_000)
    assert len(due) == 4 and nxt == start + 365 * 86_400_000 + 1000


def test_each_firing_has_a_deterministic_workflow_and_request_id() -> None:
    t = _ms("2026-12-06T08:40:05+00:00")
    assert workflow_id_for("nightly", t) == "nightly-2026-12-06T08:40:05Z"
    assert workflow_id_for("nightly", t + 250) == "nightly-2026-12-06T08:40:05.250Z"
    assert request_id_for("default", "nightly", t) == request_id_for("default", "nightly", t)
    assert iso_utc(0) == datetime.fromtimestamp(0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso_ms(iso_utc(t)) == t and iso_ms(iso_utc(t + 250)) == t + 250


def test_an_action_with_one_workflow_id_starts_runs_of_it() -> None:
    fixed = ScheduleAction.from_json({"workflow_type": "T", "task_queue": "q", "workflow_id": "report"})
    assert ScheduleAction.from_json(fixed.to_json()) == fixed
    t = _ms("2026-12-06T08:40:05+00:00")
    assert fixed.workflow_id_of("cron-report", t) == "report"
    assert fixed.start_record("default", "cron-report", t)["workflow_id"] == "report"
    assert fixed.start_record("default", "cron-report", t)["request_id"] == request_id_for("default", "cron-report", t)
    plain = ScheduleAction.from_json({"workflow_type": "T", "task_queue": "q"})
    assert "workflow_id" not in plain.to_json() and plain.workflow_id_of("s", t) == workflow_id_for("s", t)
    assert cron_schedule_id("report") == "cron-report"
    with pytest.raises(ScheduleError) as err:
        ScheduleAction.from_json({"workflow_type": "T", "task_queue": "q", "workflow_id": ""})
    assert err.value.field == "action.workflow_id"


def test_an_action_gives_every_run_its_memo_and_search_attributes() -> None:
    raw = {"workflow_type": "T", "task_queue": "q", "memo": {"b": 1, "a": [2]}, "search_attributes": {"Region": "eu"}}
    action = ScheduleAction.from_json(raw)
    assert (action.memo, action.search_attributes) == ('{"b":1,"a":[2]}', '{"Region":"eu"}')
    assert ScheduleAction.from_json(action.to_json()) == action
    record = action.start_record("default", "s", _ms("2026-12-06T08:40:05+00:00"))
    assert (record["memo"], record["search_attributes"]) == (action.memo, action.search_attributes)
    avro.encode("StartWorkflowExecution", record)  # a valid start record
    # An action stored before them reads the same as it was written.
    assert set(ScheduleAction.from_json({"workflow_type": "T", "task_queue": "q"}).to_json()) == {
        "workflow_type", "task_queue", "input", "execution_timeout_ms", "run_timeout_ms", "workflow_task_timeout_ms"}
    for name in ("memo", "search_attributes"):
        with pytest.raises(ScheduleError) as err:
            ScheduleAction.from_json({"workflow_type": "T", "task_queue": "q", name: [1]})
        assert err.value.field == f"action.{name}"


def test_every_overlap_policy_is_accepted_and_the_holding_ones_known() -> None:
    ok = {"spec": {"interval": "1s"}, "action": {"workflow_type": "T", "task_queue": "q"}}
    for policy in OverlapPolicy:
        assert ScheduleDefinition.from_json({**ok, "overlap_policy": policy.value}).overlap is policy
    assert {p for p in OverlapPolicy if p.holds} == {OverlapPolicy.BUFFER_ONE, OverlapPolicy.CANCEL_OTHER}
    assert OverlapPolicy("cancel_other") is OverlapPolicy.CANCEL_OTHER


def test_definitions_name_the_bad_field() -> None:
    ok = {"spec": {"interval": "1s"}, "action": {"workflow_type": "T", "task_queue": "q", "input": [1]}}
    d = ScheduleDefinition.from_json(ok)
    assert d.overlap is OverlapPolicy.SKIP and d.action.input == "[1]" and d.catchup_window_ms == 60_000
    cases = [
        ({**ok, "spec": {}}, "spec"),
        ({**ok, "spec": {"cron": "* * *"}}, "spec.cron"),
        ({**ok, "spec": {"interval": "1s", "time_zone": "Mars/Base"}}, "spec.time_zone"),
        ({**ok, "spec": {"interval": "1s", "offset": "2s"}}, "spec.offset"),
        ({**ok, "spec": {"cron": "0 * * * *", "offset": "30s"}}, "spec.offset"),  # was dropped without a word
        ({**ok, "action": {"task_queue": "q"}}, "action.workflow_type"),
        ({**ok, "action": {"workflow_type": "T", "task_queue": "q", "input": {}}}, "action.input"),
        ({**ok, "overlap_policy": "cancel_others"}, "overlap_policy"),
        ({**ok, "catchup_window": "later"}, "catchup_window"),
    ]
    for body, field in cases:
        with pytest.raises(ScheduleError) as err:
            ScheduleDefinition.from_json(body)
        assert err.value.field == field, body



def test_an_action_a_start_or_the_row_could_not_hold_is_refused_naming_its_field() -> None:
    """Each of these was stored or answered as an internal error (PostgreSQL's jsonb takes no
    NUL, orjson writes no integer past 64 bits), or stored and then refused at every firing."""
    ok = {"workflow_type": "T", "task_queue": "q"}
    cases = [
        ({**ok, "workflow_type": "T\x00x"}, "action.workflow_type"),
        ({**ok, "task_queue": "\U0001F600" * 600}, "action.task_queue"),  # 2400 bytes in UTF-8
        ({**ok, "task_queue": "q\ud800"}, "action.task_queue"),
        ({**ok, "workflow_id": "w\x00"}, "action.workflow_id"),
        ({**ok, "input": ["\x00"]}, "action.input"),
        ({**ok, "input": [{"k\x00": 1}]}, "action.input"),
        ({**ok, "input": ["\ud800"]}, "action.input"),
        ({**ok, "input": [10**30]}, "action.input"),
        ({**ok, "input": [float("inf")]}, "action.input"),
        ({**ok, "input": [float("nan")]}, "action.input"),
        ({**ok, "memo": {"k": "\x00"}}, "action.memo"),
        ({**ok, "memo": {"k": -(2**64)}}, "action.memo"),
        ({**ok, "search_attributes": {"K": "\x00"}}, "action.search_attributes"),
    ]
    for action, field in cases:
        with pytest.raises(ScheduleError) as err:
            ScheduleDefinition.from_json({"spec": {"interval": "1s"}, "action": action})
        assert err.value.field == field, action
    with pytest.raises(ScheduleError) as err:
        ScheduleDefinition.from_json({"spec": {"interval": "1s"}, "action": ok, "note": "a\x00"})
    assert err.value.field == "note"
    # The edges still taken: 64-bit integers either way, text with every other character.
    edge = {**ok, "input": [2**64 - 1, -(2**63), "\u00e9\U0001F600\n"], "memo": {"k": 1.5e308}}
    assert ScheduleDefinition.from_json({"spec": {"interval": "1s"}, "action": edge}).action.input is not None
    # A cron start builds its action from a start's JSON text: the same check, by method.
    with pytest.raises(ScheduleError):
        ScheduleAction("T", "q", "[18446744073709551616]").check()
    ScheduleAction("T", "q", "[18446744073709551615]", memo='{"k":"v"}').check()
    # A row an older build stored is read and fired as it is: the check is for new schedules.
    stored = ScheduleAction.from_json({**ok, "input": [10**30], "task_queue": "\U0001F600" * 600})
    assert stored.input == "[" + "1" + "0" * 30 + "]"
    assert stored.start_record("default", "s", 0)["input"] == stored.input

def test_every_namespace_and_schedule_route_is_classified_and_documented() -> None:
    from services.frontend.admin import ADMIN_ROUTES
    from services.frontend.auth import OPERATION_PERMISSIONS, Permission
    from services.frontend.openapi import document

    names = {name for _, _, name in ADMIN_ROUTES}
    assert names <= set(OPERATION_PERMISSIONS)
    assert {n for n in names if OPERATION_PERMISSIONS[n] is Permission.ADMIN} == {
        "create_namespace", "list_namespaces", "update_namespace"}
    documented = {op["operationId"] for path in document()["paths"].values() for op in path.values()}
    assert names <= documented


async def test_misses_of_many_names_share_reads_started_at_most_once_per_interval() -> None:
    pool = _Pool({"default"})
    registry = NamespaceRegistry(pool, miss_read_interval=0.05)
    found = await asyncio.gather(*(registry.is_registered(f"made-up-{i}") for i in range(50)))
    # The first miss starts a read; those that came after it wait for the next, one for them all.
    assert not any(found) and pool.fetches <= 2
    before = pool.fetches
    pool.names.add("new")  # created by another frontend just now
    assert await registry.is_registered("new") and pool.fetches == before + 1  # a read that started after


def _history_registry(pool: Any) -> Callable[[str, float], Awaitable[bool]]:
    """How history's intake asks (services/history/service.py): a read begun after ``began``."""
    registry = NamespaceRegistry(pool)

    async def registered(name: str, began: float) -> bool:
        return await registry.is_registered(name, read_after=began)
    return registered


async def test_history_misses_of_a_batch_share_one_read_started_after_it_began() -> None:
    pool: Any = _Pool({"default"})
    registered = _history_registry(pool)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(50):  # a batch of records naming made-up namespaces
        assert not await registered(f"made-up-{i}", began)
    assert pool.fetches == 1
    pool.names.add("shop")  # created just now, after that read
    began = loop.time()  # the next batch, whose record names it
    assert await registered("made-up-0", began) is False
    assert await registered("shop", began) and pool.fetches == 2
    assert loop.time() - began < 1.0  # the second read waited at most MISS_READ_INTERVAL_S


async def test_history_refuses_a_namespace_only_on_a_read_after_its_batch_began() -> None:
    pool: Any = _Pool({"default"})
    registered = _history_registry(pool)
    loop = asyncio.get_running_loop()
    assert not await registered("shop", loop.time())  # a record sent too early
    pool.names.add("shop")  # created a moment later; a record naming it follows
    assert await registered("shop", loop.time())  # no miss believed from before


def test_a_new_schedule_takes_no_interval_under_a_second_nor_a_random_cron() -> None:
    assert ScheduleSpec.given({"interval": "1s"}).interval_ms == 1000
    with pytest.raises(ScheduleError, match="at least 1s") as refused:
        ScheduleSpec.given({"interval": "999ms"})
    assert refused.value.field == "spec.interval"
    for cron in ("R * * * *", "0 R(1-5) * * *", "0 0 * * * r"):
        with pytest.raises(ScheduleError, match="random"):
            ScheduleSpec.given({"cron": cron})
    for cron in ("0 0 * MAR FRI", "@yearly", "0 9 * * sat,sun"):  # names holding an r are names
        assert ScheduleSpec.given({"cron": cron}).cron == cron
    # A stored spec is read back as it was made (a row made before these checks still fires).
    assert ScheduleSpec.from_json({"interval": "1ms"}).interval_ms == 1


def test_a_cron_without_a_next_time_ends_the_schedule_rather_than_failing() -> None:
    never = ScheduleSpec.from_json({"cron": "0 0 30 2 *"})  # February 30th
    assert never.next_after(_ms("2026-12-06T08:00:00+00:00")) is None
    # Once on New Year's Day 2027 (fields: minute hour day month weekday second year).
    once = ScheduleSpec.from_json({"cron": "0 0 1 1 * 0 2027", "jitter": "1m"})
    first = once.next_after(_ms("2026-12-06T08:00:00+00:00"))
    assert first == _ms("2027-01-01T00:00:00+00:00")
    assert once.next_after(first) is None
    assert 0 <= once.jitter("s", first) <= 60_000
    # The last firing is due, and then there is none.
    due, missed, nxt = due_times(once, "s", first, first + 120_000, 600_000)
    assert (due, missed, nxt) == ([first], 0, None)


def test_a_firing_due_since_the_last_look_runs_whatever_the_window() -> None:
    spec = ScheduleSpec.from_json({"interval": "1s"})
    start = _ms("2026-12-06T08:00:00+00:00")
    # A 0s window, looked at 0.7 s after the firing: without the last look it is dropped as
    # missed (every firing was, the scheduler looking once a second) ...
    assert due_times(spec, "s", start, start + 700, 0) == ([], 1, start + 1000)
    # ... with it (the previous look came before the firing was due) it is on time.
    assert due_times(spec, "s", start, start + 700, 0, on_time_after=start - 300) == ([start], 0, start + 1000)
    # Those due before the last look are judged by the window, as after a downtime.
    due, missed, _ = due_times(spec, "s", start, start + 10_700, 2_000, on_time_after=start + 9_800)
    assert due == [start + 9_000, start + 10_000] and missed == 9


def test_a_cron_expression_is_refused_past_200_characters_before_croniter_reads_it() -> None:
    every_minute = ",".join(str(m) for m in range(60)) + " * * * *"
    assert ScheduleSpec.from_json({"cron": every_minute}).cron == every_minute
    # croniter took 3.5 s for 5,000 characters of this, 66 s for 25,000.
    with pytest.raises(ScheduleError, match="at most 200 characters") as refused:
        ScheduleSpec.from_json({"cron": ",".join(["0-59"] * 5000) + " * * * *"})
    assert refused.value.field == "spec.cron"


def test_a_stored_cron_over_the_cap_is_read_without_croniter_and_no_longer_fires() -> None:
    # Stored before the cap: describe and the scheduler read it back; croniter never sees it.
    legacy = ",".join(["0-59"] * 5000) + " * * * *"
    stored = {"cron": legacy, "time_zone": "Europe/Paris", "jitter": "5s"}
    spec = ScheduleSpec.stored(stored)
    assert (spec.cron, spec.time_zone, spec.jitter_ms) == (legacy, "Europe/Paris", 5000)
    assert spec.cannot_fire is not None and "no longer fires" in spec.cannot_fire
    assert spec.next_after(0) is None and spec.jitter("s", 0) <= 5000
    assert spec.to_json()["cron"] == legacy  # shown as stored
    # A spec within the cap reads as from_json reads it; the rest of a long one is still checked.
    assert ScheduleSpec.stored({"cron": "* * * * *"}) == ScheduleSpec.from_json({"cron": "* * * * *"})
    assert ScheduleSpec.stored({"cron": "* * * * *"}).cannot_fire is None
    with pytest.raises(ScheduleError) as refused:
        ScheduleSpec.stored({**stored, "time_zone": "Mars/Olympus"})
    assert refused.value.field == "spec.time_zone"
    with pytest.raises(ScheduleError, match="at most 200 characters"):
        ScheduleSpec.from_json(stored)  # a new one is refused, as before


@pytest.mark.parametrize(("cron", "zone", "start", "expected"), [
    # Spring, New York (14 March 2027): 01:30 exists both days; before, from the firing of the
    # 14th the next were 00:30 and 01:30 on the 15th (twice in a day, once an hour early).
    ("30 1 * * *", "America/New_York", "2027-03-13T12:00:00+00:00",
     ["2027-03-14T06:30:00+00:00", "2027-03-15T05:30:00+00:00", "2027-03-16T05:30:00+00:00"]),
    # Autumn, Paris (31 October 2027): 02:30 shows twice that night (fires at its first showing);
    # before, the next day's fired an hour late (03:30).
    ("30 2 * * *", "Europe/Paris", "2027-10-30T12:00:00+00:00",
     ["2027-10-31T00:30:00+00:00", "2027-11-01T01:30:00+00:00", "2027-11-02T01:30:00+00:00"]),
    # Spring, Paris (28 March 2027): 02:30 is skipped by the clock, so it fires at 03:30.
    ("30 2 * * *", "Europe/Paris", "2027-03-27T12:00:00+00:00",
     ["2027-03-28T01:30:00+00:00", "2027-03-29T00:30:00+00:00", "2027-03-30T00:30:00+00:00"]),
])
def test_a_cron_in_a_time_zone_fires_once_a_day_at_its_wall_time_across_a_change_of_offset(
        cron: str, zone: str, start: str, expected: list[str]) -> None:
    spec = ScheduleSpec.from_json({"cron": cron, "time_zone": zone})
    times = [_next(spec, _ms(start))]  # each next time is taken from the one before, as the scheduler does
    while len(times) < len(expected):
        times.append(_next(spec, times[-1]))
    assert times == [_ms(t) for t in expected]
