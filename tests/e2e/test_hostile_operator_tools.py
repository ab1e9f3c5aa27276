"""The operator's and tenant's everyday tools used by a hostile caller (a whole cluster: real
broker and PostgreSQL): page tokens of the list and of a history forged to hold what no row
holds are refused with a 400 (they were a 500), and schedules whose spec the scheduler cannot
keep are refused when made: an interval under a second (a 1 ms one started a hundred
workflows a second from one call, ever further behind), a cron expression with croniter's
random R (another time at each reading), one with no time to come (a 500). A cron whose
last time comes fires it once and then has no next time (its last firing was never
started: each round failed on the time after it). With authentication on, a namespace's own
admin cannot lift the limits that keep it from crowding out the other tenants (it could).
An unpause made while a scheduler round is firing the paused schedule's trigger resumes from
now (the round's advance wrote the old next time back, so the paused time was caught up), and
a schedule deleted and made again during a round does not take the old one's counts. The
web UI's type filter finds a type holding a backslash (it listed another type's runs). A
catch-up window shorter than the scheduler's looks (0s) no longer drops every firing. A cron
expression of thousands of characters is refused at once (croniter's cost grows with the
square of its length: the frontend's loop, and each scheduler round, stood still for it). The
CLI prints ids, types and messages a tenant chose as they are: no rich markup read in them (a
type 'T[/]' ended `kadence workflow list` in a traceback) and control characters shown as
escapes (an id holding ESC [2J cleared the operator's screen)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from kadence import Client
from kadence._admin_cli import cli as admin_cli
from kadence._cli.workflow import workflow as workflow_cli
from kadence.exceptions import WorkflowNotFoundError
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.common.schedules import iso_ms, workflow_id_for
from services.frontend.auth import api_key_entry
from services.history.scheduler import Scheduler
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def quick(module_broker: EmbeddedBroker, module_dsn: str) -> AsyncIterator[Cluster]:
    """One cluster for the module (each test uses its own ids), its scheduler looking five
    times a second."""
    settings = Settings(kafka_bootstrap=module_broker.bootstrap, database_url=module_dsn, shards=2,
                        task_partitions=2, frontend_port=0, session_timeout_ms=2000, scheduler_interval_ms=200)
    async with Cluster(settings) as c:
        yield c


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _list_token(namespace: str, query: str, after: list[Any]) -> str:
    """A list page token as the API makes them (services/common/visibility/sql.py): anyone
    can make one, since it is not signed; it only has to be refused cleanly."""
    digest = hashlib.sha256(f"{namespace}\n{query}".encode()).hexdigest()[:16]
    return _token({"q": digest, "after": after})


async def test_forged_page_tokens_are_refused_with_a_400_not_a_500(quick: Cluster) -> None:
    workflow_id = f"forged-{uuid.uuid4().hex[:8]}"
    base = f"{quick.url}/api/v1/namespaces/default/workflows"
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"workflow_id": workflow_id, "workflow_type": "Nobody",
                                         "task_queue": "nobody"}) as response:
            assert response.status in (200, 201), await response.text()
            run_id = (await response.json())["run_id"]
        forged = [({}, [2**63, run_id]), ({}, [2**64 - 1, run_id]), ({}, [1, "run\x00"]),
                  ({"query": "ORDER BY WorkflowId"}, ["a\x00", run_id]),
                  ({"query": "ORDER BY CloseTime"}, [2**63, run_id])]
        for params, after in forged:
            token = _list_token("default", params.get("query", ""), after)
            async with http.get(base, params={**params, "next_page_token": token}) as response:
                body = await response.json()
                assert response.status == 400, (params, after, body)
                assert body["field"] == "next_page_token"
        for payload in ({"run_id": run_id, "next_event_id": 2**63}, {"run_id": run_id, "next_event_id": 2**70},
                        {"run_id": run_id + "\x00", "next_event_id": 1}):
            async with http.get(f"{base}/{workflow_id}/history",
                                params={"next_page_token": _token(payload)}) as response:
                body = await response.json()
                assert response.status == 400, (payload, body)
                assert body["field"] == "next_page_token"
        # The tokens the API gives still page.
        async with http.get(f"{base}/{workflow_id}/history", params={"page_size": "1"}) as response:
            first = await response.json()
        async with http.get(f"{base}/{workflow_id}/history",
                            params={"page_size": "1", "next_page_token": first["next_page_token"]}) as response:
            assert response.status == 200 and (await response.json())["events"][0]["event_id"] == 2


async def test_a_schedule_the_scheduler_cannot_keep_is_refused_when_made(quick: Cluster) -> None:
    base = f"{quick.url}/api/v1/namespaces/default"
    action = {"workflow_type": "Ping", "task_queue": "ops"}
    refused = [({"interval": "1ms"}, "spec.interval", "at least 1s"),
               ({"interval": "999ms"}, "spec.interval", "at least 1s"),
               ({"cron": "R * * * *"}, "spec.cron", "random"),
               ({"cron": "0 0 30 2 *"}, "spec.cron", "never fire"),
               ({"cron": "0 0 1 1 * 0 2020"}, "spec.cron", "never fire")]
    async with aiohttp.ClientSession() as http:
        for spec, field, text in refused:
            sid = f"bad-{uuid.uuid4().hex[:8]}"
            async with http.post(f"{base}/schedules", json={"schedule_id": sid, "spec": spec,
                                                            "action": action}) as response:
                body = await response.json()
                assert response.status == 400, (spec, body)
                assert body["field"] == field and text in body["message"], body
            async with http.get(f"{base}/schedules/{sid}") as response:
                assert response.status == 404
        for cron, text in (("0 0 30 2 *", "never fire"), ("R R * * *", "random")):
            async with http.post(f"{base}/workflows", json={"workflow_id": f"cron-{uuid.uuid4().hex[:8]}",
                                                            "workflow_type": "Ping", "task_queue": "ops",
                                                            "cron_schedule": cron}) as response:
                body = await response.json()
                assert response.status == 400, (cron, body)
                assert body["field"] == "cron_schedule" and text in body["message"], body
        # A second is the shortest interval taken; month and weekday names are no R.
        for spec in ({"interval": "1s"}, {"cron": "0 9 * MAR FRI"}):
            sid = f"ok-{uuid.uuid4().hex[:8]}"
            async with http.post(f"{base}/schedules", json={"schedule_id": sid, "spec": spec, "action": action,
                                                            "paused": True}) as response:
                assert response.status == 201, await response.text()


async def test_a_cron_whose_last_time_comes_fires_it_and_then_has_no_next(quick: Cluster) -> None:
    client = await Client.connect(quick.url, namespace="default")
    try:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
        # croniter's seven fields: minute hour day month weekday second year; one time only.
        cron = f"{at.minute} {at.hour} {at.day} {at.month} * {at.second} {at.year}"
        sid = f"once-{uuid.uuid4().hex[:8]}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{quick.url}/api/v1/namespaces/default/schedules", json={
                    "schedule_id": sid, "spec": {"cron": cron},
                    "action": {"workflow_type": "Ping", "task_queue": f"q-{sid}"}}) as response:
                created = await response.json()
                assert response.status == 201, created
        assert created["next_action_times"] == [at.strftime("%Y-%m-%dT%H:%M:%SZ")]
        workflow_id = workflow_id_for(sid, int(at.timestamp() * 1000))

        async def started() -> dict[str, Any] | None:
            try:
                return dict(await client.get_workflow_handle(workflow_id).describe())
            except WorkflowNotFoundError:
                return None

        assert await eventually(started, timeout=30)

        async def ended() -> dict[str, Any] | None:
            described = dict(await client.describe_schedule(sid))
            return described if described["actions_started"] == 1 else None

        described = await eventually(ended, timeout=30)
        assert described is not None and described["next_action_times"] == []
        # Unpaused again (from now): still none, and no error.
        await client.pause_schedule(sid)
        assert (await client.unpause_schedule(sid))["next_action_times"] == []
    finally:
        await client.close()


@pytest.fixture
async def secured(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"api_keys": [
        api_key_entry("shop-admin", "shop-admin-key", [{"namespace": "shop", "permissions": ["admin"]}]),
        api_key_entry("ops", "ops-key", [{"namespace": "*", "permissions": ["admin"]}]),
    ]}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, auth_config=str(config))
    async with Cluster(settings) as c:
        yield c


async def test_a_namespaces_own_admin_cannot_lift_its_limits(secured: Cluster) -> None:
    url = f"{secured.url}/api/v1/namespaces"
    ops, tenant = {"Authorization": "Bearer ops-key"}, {"Authorization": "Bearer shop-admin-key"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"name": "shop", "retention": "7d"}, headers=ops) as response:
            assert response.status == 201, await response.text()
        async with http.patch(f"{url}/shop", json={"limits": {"rps": 10}}, headers=ops) as response:
            assert response.status == 200, await response.text()
        for limits in ({"rps": 1e9}, {"rps": None}, {"concurrent_polls": 100_000}, {"answer_rps": 1e9}):
            async with http.patch(f"{url}/shop", json={"limits": limits}, headers=tenant) as response:
                body = await response.json()
                assert response.status == 403, (limits, body)
                assert "every namespace (*)" in body["message"]
        # Its description and retention stay its own to set.
        async with http.patch(f"{url}/shop", json={"retention": "3d", "description": "orders"},
                              headers=tenant) as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{url}/shop", headers=tenant) as response:
            described = await response.json()
        assert described["limits"]["rps"] == 10 and described["retention"] == "3d"
    env = {"KADENCE_ADDRESS": secured.url, "KADENCE_API_KEY": "shop-admin-key"}
    cli = await asyncio.to_thread(CliRunner().invoke, admin_cli,
                                  ["namespace", "update", "shop", "--rps-limit", "default"], env=env)
    assert cli.exit_code == 1 and "PermissionDenied" in cli.output, cli.output


class _Parked:
    """Holds the scheduler's round that fires schedule ``sid`` just before it produces (its
    commands still go to the broker once released, then the row advances)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sid: str) -> None:
        self.parked, self.release, self.done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        produce, fire = Scheduler._produce, Scheduler._fire

        async def held(scheduler: Scheduler, commands: list[tuple[str, dict[str, Any]]]) -> None:
            if any(str(record.get("workflow_id", "")).startswith(sid) for _, record in commands):
                self.parked.set()
                await self.release.wait()
            await produce(scheduler, commands)

        async def fired(scheduler: Scheduler, row: Any, *args: Any) -> int:
            try:
                return await fire(scheduler, row, *args)
            finally:
                if self.release.is_set() and row["schedule_id"] == sid:
                    self.done.set()  # the held round has written its advance (or not)

        monkeypatch.setattr(Scheduler, "_produce", held)
        monkeypatch.setattr(Scheduler, "_fire", fired)


async def test_an_unpause_during_a_round_resumes_from_now_without_catching_up(
        quick: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"race-{uuid.uuid4().hex[:8]}"
    round_ = _Parked(monkeypatch, sid)
    client = await Client.connect(quick.url, namespace="default")
    try:
        await client.create_schedule(sid, "Ping", task_queue=f"q-{sid}", interval=timedelta(seconds=1),
                                     overlap_policy="allow_all", catchup_window=timedelta(hours=1), paused=True)
        # Paused over three of its times (the row keeps the first of them as its next).
        created_at = _now_ms()
        await eventually(lambda: _now_ms() > created_at + 3000, timeout=10, what="three paused seconds")
        await client.trigger_schedule(sid)
        await asyncio.wait_for(round_.parked.wait(), 15)
        unpaused = await client.unpause_schedule(sid)
        resumes_at = iso_ms(unpaused["next_action_times"][0])
        round_.release.set()

        async def fired_after_unpause() -> dict[str, Any] | None:
            described = dict(await client.describe_schedule(sid))
            scheduled = [a for a in described["recent_actions"] if a["how"] == "scheduled"]
            return described if scheduled else None

        described = await eventually(fired_after_unpause, timeout=20)
        assert described is not None
        early = [a for a in described["recent_actions"]
                 if a["how"] == "scheduled" and iso_ms(a["scheduled_time"]) < resumes_at]
        assert early == [], f"fired for the paused time: {early}"
        # What the held round did is still recorded.
        assert [a["result"] for a in described["recent_actions"] if a["how"] == "triggered"] == ["started"]
    finally:
        round_.release.set()
        await client.close()


async def test_a_schedule_made_again_during_a_round_is_not_the_old_ones(
        quick: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"again-{uuid.uuid4().hex[:8]}"
    round_ = _Parked(monkeypatch, sid)
    client = await Client.connect(quick.url, namespace="default")
    try:
        await client.create_schedule(sid, "Ping", task_queue=f"q-{sid}", interval=timedelta(seconds=1),
                                     overlap_policy="allow_all")
        await asyncio.wait_for(round_.parked.wait(), 15)
        await client.delete_schedule(sid)
        await client.create_schedule(sid, "Other", task_queue=f"q2-{sid}", interval=timedelta(hours=1), paused=True)
        made_again = dict(await client.describe_schedule(sid))
        round_.release.set()
        # The held round's advance finds another schedule under the id: it leaves it alone.
        await asyncio.wait_for(round_.done.wait(), 15)
        described = dict(await client.describe_schedule(sid))
        assert described["actions_started"] == 0 and described["recent_actions"] == [], described
        assert described["last_workflow_id"] is None
        assert described["created_time"] == made_again["created_time"]
    finally:
        round_.release.set()
        await client.close()


async def test_the_ui_type_filter_finds_a_type_holding_a_backslash(quick: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    wanted, other = f"Back\\slash{tag}", f"Backslash{tag}"
    async with aiohttp.ClientSession() as http:
        for workflow_type in (wanted, other):
            async with http.post(f"{quick.url}/api/v1/namespaces/default/workflows", json={
                    "workflow_id": f"{workflow_type}-run", "workflow_type": workflow_type,
                    "task_queue": f"q-{tag}"}) as response:
                assert response.status in (200, 201), await response.text()

        async def listed() -> bool:
            async with http.get(f"{quick.url}/api/v1/namespaces/default/workflows",
                                params={"query": f"TaskQueue = 'q-{tag}'"}) as response:
                return len((await response.json())["executions"]) == 2

        await eventually(listed, timeout=20, what="both runs listed")
        async with http.get(f"{quick.url}/ui/namespaces/default/workflows", params={"type": wanted}) as page:
            text = await page.text()
        assert page.status == 200 and 'id="query-error"' not in text, text[:2000]
        # Its run is listed (the id is shown escaped, the backslash as is), the other type's not.
        assert f"Backslash{tag}-run" not in text and f"Back\\slash{tag}-run" in text, text[:3000]


async def test_a_zero_catchup_window_still_fires_on_time(quick: Cluster) -> None:
    sid = f"zero-{uuid.uuid4().hex[:8]}"
    client = await Client.connect(quick.url, namespace="default")
    try:
        await client.create_schedule(sid, "Ping", task_queue=f"q-{sid}", interval=timedelta(seconds=1),
                                     overlap_policy="allow_all", catchup_window="0s")

        async def fired_twice() -> dict[str, Any] | None:
            described = dict(await client.describe_schedule(sid))
            return described if described["actions_started"] >= 2 else None

        # The scheduler looks every 200 ms here: each firing is found up to 200 ms after its
        # time, which a 0s window counted as missed (0 started, every one skipped).
        described = await eventually(fired_twice, timeout=20, what="two firings")
        assert described is not None and described["actions_skipped"] == 0, described
        await client.delete_schedule(sid)
    finally:
        await client.close()


async def test_a_huge_cron_expression_is_refused_at_once(quick: Cluster) -> None:
    cron = ",".join(["0-59"] * 2000) + " * * * *"  # 10,000 characters: croniter took ~15 s of CPU
    base = f"{quick.url}/api/v1/namespaces/default"
    async with aiohttp.ClientSession() as http:
        for path, body, field in (
                ("/schedules", {"schedule_id": f"huge-{uuid.uuid4().hex[:8]}", "spec": {"cron": cron},
                                "action": {"workflow_type": "Ping", "task_queue": "ops"}}, "spec.cron"),
                ("/workflows", {"workflow_id": f"huge-{uuid.uuid4().hex[:8]}", "workflow_type": "Ping",
                                "task_queue": "ops", "cron_schedule": cron}, "cron_schedule")):
            async with asyncio.timeout(5):
                async with http.post(base + path, json=body) as response:
                    answer = await response.json()
            assert response.status == 400 and answer["field"] == field, answer
            assert "characters" in answer["message"], answer
        # A cron start's expression of 201 to 1000 characters (its own field bound) is refused too.
        async with http.post(base + "/workflows", json={
                "workflow_id": f"huge-{uuid.uuid4().hex[:8]}", "workflow_type": "Ping", "task_queue": "ops",
                "cron_schedule": ",".join(["0-59"] * 100) + " * * * *"}) as response:
            answer = await response.json()
        assert response.status == 400 and "at most 200 characters" in answer["message"], answer


async def test_the_cli_shows_what_a_tenant_named_things_without_obeying_it(quick: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    runs = {f"clear-{tag}\x1b[2J\x1b[H": "Plain", f"[reverse]styled-{tag}[/reverse]": f"T[/]{tag}",
            f"title-{tag}\x1b]0;owned\x07": f"Right\u202eto-left{tag}"}
    async with aiohttp.ClientSession() as http:
        for workflow_id, workflow_type in runs.items():
            async with http.post(f"{quick.url}/api/v1/namespaces/default/workflows", json={
                    "workflow_id": workflow_id, "workflow_type": workflow_type,
                    "task_queue": f"q-{tag}"}) as response:
                assert response.status in (200, 201), await response.text()

    env = {"KADENCE_ADDRESS": quick.url, "KADENCE_NAMESPACE": "default", "COLUMNS": "250"}

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, workflow_cli, list(args), env=env)

    async def listed() -> Any:
        result = await cli("list", "-q", f"TaskQueue = 'q-{tag}'")
        return result if result.exit_code == 0 and result.output.count(tag) >= 6 else None

    result = await eventually(listed, timeout=20, what="the three runs listed")
    out = result.output
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, repr(out)
    assert f"clear-{tag}\\x1b[2J\\x1b[H" in out and f"title-{tag}\\x1b]0;owned\\x07" in out
    assert f"[reverse]styled-{tag}[/reverse]" in out and f"T[/]{tag}" in out and "\\u202e" in out
    described = await cli("describe", "-w", f"clear-{tag}\x1b[2J\x1b[H", "--no-stack-trace")
    assert described.exit_code == 0 and "\x1b" not in described.output, repr(described.output)
    missing = await cli("describe", "-w", f"gone-{tag}\x1b[2J")
    assert missing.exit_code == 3 and "\x1b" not in missing.output and "\\x1b[2J" in missing.output
