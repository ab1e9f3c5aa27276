"""Schedules on a whole cluster (real broker and PostgreSQL): cancel_other, the catch-up
window after downtime, jitter, time zones and a pause with its note.

The other overlap policies, triggers and a restart of the in-process services are in
test_namespaces.py; a restart of ``kadence dev`` in test_schedule_dev_restart.py.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from kadence import Client, Worker, WorkflowIDReusePolicy
from kadence.exceptions import RPCError, WorkflowNotFoundError
from services.cluster import Cluster
from services.common import dlq as dead_letters
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.schedules import ScheduleSpec, workflow_id_for
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, EchoWorkflow

pytestmark = pytest.mark.timeout(150)


def _quick(broker: EmbeddedBroker, dsn: str) -> Settings:
    """A cluster whose scheduler looks five times a second."""
    return Settings(kafka_bootstrap=broker.bootstrap, database_url=dsn, shards=2, task_partitions=2,
                    frontend_port=0, session_timeout_ms=2000, scheduler_interval_ms=200)


@pytest.fixture(scope="module")
async def quick(module_broker: EmbeddedBroker, module_dsn: str) -> AsyncIterator[Cluster]:
    """One such cluster for the module's tests (as tests/e2e/conftest.py module_cluster): each
    uses schedule ids, workflow ids and task queues of its own, deletes a schedule that would
    go on firing often, and counts only its own schedules' firings and dead letters."""
    async with Cluster(_quick(module_broker, module_dsn)) as c:
        yield c


@pytest.fixture
async def own_quick(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    """Such a cluster for one test, which stops it."""
    async with Cluster(_quick(broker, fresh_dsn)) as c:
        yield c


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _described(client: Client, schedule_id: str, check: object) -> dict[str, Any] | None:
    described = await client.describe_schedule(schedule_id)
    assert callable(check)
    return described if check(described) else None


async def _workflow(client: Client, workflow_id: str) -> dict[str, Any] | None:
    try:
        return dict(await client.get_workflow_handle(workflow_id).describe())
    except WorkflowNotFoundError:
        return None


async def test_cancel_other_asks_the_previous_run_to_cancel_and_starts_once_it_closes(quick: Cluster) -> None:
    async with await Client.connect(quick.url) as client:
        queue = _id("q-cancel")
        # ApprovalWorkflow waits for a signal that never comes: each run stays open until canceled.
        async with Worker(client, task_queue=queue, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            await client.create_schedule("cancelling", ApprovalWorkflow.run, task_queue=queue, interval="2s",
                                         overlap_policy="cancel_other")
            described = await eventually(lambda: _described(client, "cancelling",
                                                            lambda d: d["actions_started"] >= 3),
                                         timeout=40, what="three runs, each after canceling the previous")
            recent = described["recent_actions"]
            assert isinstance(recent, list)
            started = [a["workflow_id"] for a in recent if a["result"] == "started"]
            asked = [a["workflow_id"] for a in recent if a["result"] == "cancel_requested"]
            assert started[0] in asked  # the first run was asked to cancel ...
            first = await _workflow(client, started[0])
            assert first is not None and first["status"] == "Canceled"  # ... and was canceled
            # A run started by cancel_other comes out of the buffer, after the previous closed.
            assert [a["how"] for a in recent if a["result"] == "started"][1:] == ["buffered"] * (len(started) - 1)
            for previous, following in itertools.pairwise(started):
                before = await _workflow(client, previous)
                after = await eventually(functools.partial(_workflow, client, following), what=f"run {following}")
                assert before is not None
                assert before["close_time"] is not None and before["close_time"] <= after["start_time"]
            await client.delete_schedule("cancelling")  # the module's cluster goes on with other tests


async def test_firings_missed_while_down_are_caught_up_within_the_window_older_ones_skipped(
        own_quick: Cluster) -> None:
    cluster = quick = own_quick
    client = await Client.connect(cluster.url)
    try:
        await client.create_schedule("catchup", EchoWorkflow.run, "x", task_queue="q-catchup", interval="1s",
                                     overlap_policy="allow_all", catchup_window="5s")
        await eventually(lambda: _described(client, "catchup", lambda d: d["actions_started"] >= 1),
                         timeout=20, what="a first firing")
        await client.close()
        await cluster.stop()
        down_from = (int(time.time() * 1000) // 1000 + 1) * 1000  # no firing at or after this was taken
        # Every service stays down for 11 s, longer than the 5 s window.
        await eventually(lambda: time.time() * 1000 >= down_from + 11_000, timeout=20, every=0.2,
                         what="the downtime")
        up_from = int(time.time() * 1000)
        cluster = Cluster(dataclasses.replace(quick.settings, instance_id=_id("again")))
        await cluster.start()
        started = int(time.time() * 1000)  # a slow start (a loaded machine) moves the first round
        client = await Client.connect(cluster.url)

        spec = ScheduleSpec.from_json({"interval": "1s"})
        missed = list(range(down_from, up_from, 1000))
        # A round after the restart (the scheduler looks every 200 ms) fires every firing of the
        # downtime at most 5 s late, so the newest ones of the downtime are started ...
        caught_up = [t for t in missed if t >= started - 3000]
        assert caught_up or started - up_from > 3000, (missed, up_from, started)
        for t in caught_up:
            await eventually(functools.partial(_workflow, client, workflow_id_for("catchup", t)), timeout=20,
                             what=f"the firing of {t} caught up")
        # ... and the firings after it too, while the oldest ones are counted as skipped, never started.
        await eventually(lambda: _workflow(client, workflow_id_for("catchup", (spec.next_after(up_from) or 0) + 1000)),
                         timeout=20, what="a firing after the restart")
        for t in missed:
            if t < up_from - 5000:
                assert await _workflow(client, workflow_id_for("catchup", t)) is None, t
        described = await client.describe_schedule("catchup")
        assert described["actions_skipped"] >= len([t for t in missed if t < up_from - 5000])
    finally:
        await client.close()
        if cluster is not quick:
            await cluster.stop()


async def test_jitter_delays_each_firing_by_its_own_deterministic_amount(quick: Cluster) -> None:
    async with await Client.connect(quick.url) as client:
        created = await client.create_schedule("jittery", EchoWorkflow.run, "j", task_queue="q-jitter",
                                               interval="2s", jitter="1500ms", overlap_policy="allow_all")
        spec = ScheduleSpec.from_json(created["spec"])
        assert spec.jitter_ms == 1500
        # describe's upcoming times are nominal plus the jitter of that firing.
        upcoming = [_ms(t) for t in created["next_action_times"]]
        nominal = [t - t % 2000 for t in upcoming]
        assert upcoming == [t + spec.jitter("jittery", t) for t in nominal]
        assert any(t % 1000 for t in upcoming)  # not every one on a whole second
        async with Worker(client, task_queue="q-jitter", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            fired = await eventually(lambda: _described(client, "jittery", lambda d: d["actions_started"] >= 3),
                                     timeout=30, what="three firings")
        await client.delete_schedule("jittery")  # the module's cluster goes on with other tests
        recent = fired["recent_actions"]
        assert isinstance(recent, list)
        for action in recent:
            run = await eventually(functools.partial(_workflow, client, action["workflow_id"]), what="the run")
            t = _ms(action["scheduled_time"])
            # Never before its jittered time (the scheduler looks every 200 ms, so a little after).
            assert run["start_time"] >= t + spec.jitter("jittery", t), action


async def test_a_cron_schedule_runs_in_its_time_zone_and_a_pause_keeps_its_note(quick: Cluster) -> None:
    async with await Client.connect(quick.url) as client:
        for zone in ("Europe/Paris", "America/New_York", "Asia/Kolkata"):
            created = await client.create_schedule(f"nine-{zone.split('/')[1].lower()}", EchoWorkflow.run, "tz",
                                                   task_queue="q-tz", cron="0 9 * * *", time_zone=zone)
            assert created["spec"]["time_zone"] == zone
            local = [datetime.fromtimestamp(_ms(t) / 1000, tz=UTC).astimezone(ZoneInfo(zone))
                     for t in created["next_action_times"]]
            assert [(t.hour, t.minute) for t in local] == [(9, 0)] * len(local), (zone, local)
            assert len({t.date() for t in local}) == len(local)  # one a day
        paused = await client.pause_schedule("nine-paris", note="the office is closed")
        assert (paused["paused"], paused["note"]) == (True, "the office is closed")
        described = await client.describe_schedule("nine-paris")
        assert (described["paused"], described["note"]) == (True, "the office is closed")
        listed = {s["schedule_id"]: s for s in await client.list_schedules()}
        assert listed["nine-paris"]["note"] == "the office is closed" and not listed["nine-kolkata"]["paused"]
        resumed = await client.unpause_schedule("nine-paris", note="open again")
        assert (resumed["paused"], resumed["note"]) == (False, "open again")


async def test_a_cron_start_is_a_schedule_starting_runs_of_one_workflow_id(quick: Cluster) -> None:
    async with await Client.connect(quick.url) as client:
        wid = _id("report")
        # Every 2 seconds (croniter's sixth field is the seconds).
        handle = await client.start_workflow(EchoWorkflow.run, "cron", id=wid, task_queue="q-cron",
                                             cron_schedule="* * * * * */2")
        assert handle.run_id is None  # nothing runs until the first cron time
        again = await client.start_workflow(EchoWorkflow.run, "cron", id=wid, task_queue="q-cron",
                                            cron_schedule="* * * * * */2")  # the same: answered the same
        assert again.workflow_id == wid
        with pytest.raises(RPCError) as refused:
            await client.start_workflow(EchoWorkflow.run, "other", id=wid, task_queue="q-cron",
                                        cron_schedule="* * * * * */2")
        assert (refused.value.status, refused.value.error_type) == (409, "WorkflowAlreadyStarted")
        with pytest.raises(RPCError) as refused:  # a memo and search attributes it takes (its action's)
            await client.start_workflow(EchoWorkflow.run, "m", id=_id("policy"), task_queue="q-cron",
                                        cron_schedule="* * * * *",
                                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        assert (refused.value.status, refused.value.field) == (400, "id_reuse_policy")
        with pytest.raises(RPCError) as refused:
            await client.start_workflow(EchoWorkflow.run, id=_id("bad"), task_queue="q-cron", cron_schedule="often")
        assert (refused.value.status, refused.value.field) == (400, "cron_schedule")

        schedule = await client.describe_schedule(f"cron-{wid}")
        assert (schedule["overlap_policy"], schedule["action"]["workflow_id"]) == ("skip", wid)
        async with Worker(client, task_queue="q-cron", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            fired = await eventually(lambda: _described(client, f"cron-{wid}", lambda d: d["actions_started"] >= 2),
                                     timeout=30, what="two firings")
            recent = fired["recent_actions"]
            assert isinstance(recent, list)
            assert {a["workflow_id"] for a in recent if a["result"] == "started"} == {wid}

            async def runs() -> list[str] | None:
                found = [e.run_id async for e in client.list_workflows(f"WorkflowId = '{wid}'")]
                return found if len(found) >= 2 else None
            run_ids = await eventually(runs, timeout=30, what="two runs of the workflow id listed")
            assert len(set(run_ids)) == len(run_ids)
            # describe and result follow the latest run of the workflow id.
            latest = client.get_workflow_handle(wid)
            assert (await latest.describe())["workflow_type"] == "EchoWorkflow"
            # Deleting the schedule stops the cron; the runs it started stay.
            await client.delete_schedule(f"cron-{wid}")
            assert await latest.result(timeout=20) == "cron"
        with pytest.raises(RPCError) as refused:
            await client.describe_schedule(f"cron-{wid}")
        assert refused.value.status == 404


async def test_a_schedule_the_row_cannot_hold_is_refused_and_the_namespace_still_lists(quick: Cluster) -> None:
    """A NUL in an action's strings was a 500 (PostgreSQL's jsonb refuses it); an integer past
    64 bits was stored and then made every list of the namespace's schedules a 500."""
    base = f"{quick.url}/api/v1/namespaces/default"
    action = {"workflow_type": "T", "task_queue": "q"}
    async with aiohttp.ClientSession() as http:
        kept = {"schedule_id": _id("kept"), "spec": {"interval": "1h"}, "action": action}
        async with http.post(f"{base}/schedules", json=kept) as answer:
            assert answer.status == 201
        bodies: list[tuple[dict[str, Any], str]] = [
            ({**kept, "schedule_id": _id("nul"), "action": {**action, "input": ["\x00"]}}, "action.input"),
            ({**kept, "schedule_id": _id("big"), "action": {**action, "input": [10**30]}}, "action.input"),
            ({**kept, "schedule_id": _id("memo"), "action": {**action, "memo": {"k": "\x00"}}}, "action.memo"),
            ({**kept, "schedule_id": _id("type"), "action": {**action, "workflow_type": "T\x00"}},
             "action.workflow_type"),
            ({**kept, "schedule_id": _id("note"), "note": "\x00"}, "note"),
            # A cron start makes its schedule from the start's fields: the same check.
            ({"workflow_id": _id("cron"), "workflow_type": "T", "task_queue": "q", "cron_schedule": "* * * * *",
              "memo": {"k": "\x00"}}, "memo"),
            ({"workflow_id": _id("cron"), "workflow_type": "T", "task_queue": "q", "cron_schedule": "* * * * *",
              "input": [2**64]}, "input"),
        ]
        for body, field in bodies:
            path = "/workflows" if "cron_schedule" in body else "/schedules"
            async with http.post(base + path, json=body) as answer:
                refused = await answer.json()
                assert (answer.status, refused["field"]) == (400, field), (body, refused)
        async with http.get(f"{base}/schedules") as answer:
            assert answer.status == 200
            listed = [s["schedule_id"] for s in (await answer.json())["schedules"]]
        refused_ids = {body.get("schedule_id") or f"cron-{body['workflow_id']}" for body, _ in bodies}
        assert kept["schedule_id"] in listed and not refused_ids & set(listed)


async def test_a_cron_start_whose_schedule_id_would_pass_the_limit_is_refused(quick: Cluster) -> None:
    """cron-{workflow_id} past 1000 characters (or 2000 UTF-8 bytes) was created, and then no
    path could describe, pause or delete it: a cron nobody could stop. Shorter, each firing's
    request id schedule:{namespace}:cron-{workflow_id}:{ms} could pass the limit: every start
    it produced was dead-lettered."""
    async with await Client.connect(quick.url) as client:
        # In namespace default the request id has 38 characters besides the workflow id (the
        # time counted at its widest, 15 digits): 962 is the longest id.
        for too_long in ("w" * 996, "w" * 963, "\u00e9" * 982):  # 1001, 1001 characters; 2001 bytes
            with pytest.raises(RPCError) as refused:
                await client.start_workflow(EchoWorkflow.run, id=too_long, task_queue="q", cron_schedule="0 0 1 1 *")
            assert (refused.value.status, refused.value.field) == (400, "workflow_id")
            assert "cron" in refused.value.message
        assert not [s for s in await client.list_schedules() if s["schedule_id"].endswith(("w" * 900, "\u00e9" * 900))]
        longest = "w" * 962
        await client.start_workflow(EchoWorkflow.run, id=longest, task_queue="q", cron_schedule="* * * * * */1")
        assert (await client.describe_schedule(f"cron-{longest}"))["action"]["workflow_id"] == longest
        # Its firings start runs (before, a request id past the limit was refused at each).
        run = await eventually(lambda: _workflow(client, longest), timeout=30, what="a run of the longest cron id")
        assert run["workflow_id"] == longest
        await client.delete_schedule(f"cron-{longest}")


async def test_a_trigger_of_a_cron_start_while_its_run_is_open_is_skipped_not_dead_lettered(
        quick: Cluster, module_broker: EmbeddedBroker) -> None:
    """A cron start's schedule starts one workflow id: a trigger while its run was open was
    counted started, and its start went to kadence.dlq refused as WorkflowAlreadyStarted."""
    async with await Client.connect(quick.url) as client:
        wid = _id("cron-trigger")
        await client.start_workflow(EchoWorkflow.run, "x", id=wid, task_queue="q-nobody", cron_schedule="0 0 1 1 *")
        await client.trigger_schedule(f"cron-{wid}")
        run = await eventually(lambda: _workflow(client, wid), timeout=20, what="the triggered run")
        assert run["status"] == "Running"  # no worker: it stays open
        await client.trigger_schedule(f"cron-{wid}")
        described = await eventually(lambda: _described(client, f"cron-{wid}", lambda d: len(d["recent_actions"]) >= 2),
                                     timeout=20, what="the second trigger taken")
        assert [(a["how"], a["result"]) for a in described["recent_actions"]] == [
            ("triggered", "started"), ("triggered", "skipped")]
        assert described["actions_started"] == 1
    letters = [e for e in await dead_letters.list_dead_letters(module_broker.bootstrap)
               if wid.encode() in (e.key or b"")]
    assert letters == []


async def test_a_stored_cron_over_the_cap_describes_and_lists_and_no_longer_fires(quick: Cluster) -> None:
    """A cron expression over 200 characters, stored before the cap (written here straight
    into the row), made describe and list answer 500; and the scheduler logged the row as
    unreadable at every round, forever. It describes now, says it no longer fires, refuses a
    trigger, and the scheduler drops its due time once."""
    legacy = ",".join(str(m) for m in range(60)) + " " + ",".join(str(h) for h in range(24)) + " * * *"
    assert len(legacy) > 200
    sid, kept = _id("legacy"), _id("kept")
    async with await Client.connect(quick.url) as client:
        for schedule_id in (sid, kept):
            await client.create_schedule(schedule_id, "EchoWorkflow", task_queue="q-nobody", cron="0 0 1 1 *")
        conn = await asyncpg.connect(quick.settings.database_url)
        try:
            # Due now, as a row created before the cap would be at its time.
            await conn.execute("UPDATE schedules SET spec = $2, next_fire_at = 0 WHERE schedule_id = $1",
                               sid, json.dumps({"cron": legacy, "time_zone": "UTC", "jitter": "0s"}))
            described = await client.describe_schedule(sid)
            assert described["spec"]["cron"] == legacy and described["next_action_times"] == []
            assert "no longer fires" in described["invalid_schedule_error"]
            listed = {s["schedule_id"]: s for s in await client.list_schedules()}
            assert listed[sid]["invalid_schedule_error"] == described["invalid_schedule_error"]
            assert listed[kept]["invalid_schedule_error"] is None and listed[kept]["next_action_times"]
            with pytest.raises(RPCError) as refused:
                await client.trigger_schedule(sid)
            assert (refused.value.status, refused.value.error_type) == (400, "FailedPrecondition")

            async def retired() -> Any:
                row = await conn.fetchrow("SELECT next_nominal, skipped, fired FROM schedules"
                                          " WHERE schedule_id = $1", sid)
                return row if row["next_nominal"] is None else None

            row = await eventually(retired, timeout=10, what="the scheduler dropping the due time")
            assert (row["skipped"], row["fired"]) == (1, 0)
            described = await client.describe_schedule(sid)
            assert [(a["how"], a["result"]) for a in described["recent_actions"]] == [("scheduled", "skipped")]
            await client.delete_schedule(sid)
        finally:
            await conn.close()
