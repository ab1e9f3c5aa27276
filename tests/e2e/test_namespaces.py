"""Namespaces, retention and schedules on a whole cluster (real broker and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from kadence import Client, Worker
from kadence import kafka as ingress
from kadence.exceptions import RPCError, WorkflowNotFoundError
from services.cluster import Cluster
from services.common import dlq as dead_letters
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
from services.history.audit import audit
from tests.helpers import eventually

from ..conftest import new_database
from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, ApprovalWorkflow, EchoWorkflow

pytestmark = pytest.mark.timeout(120)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def quick(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    """A cluster whose retention may be 1 s, and whose jobs look five times a second."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, min_retention_ms=1000,
                        retention_interval_ms=200, scheduler_interval_ms=200)
    async with Cluster(settings) as c:
        yield c


async def test_namespaces_are_registered_listed_updated_and_unknown_ones_refused(cluster: Cluster,
                                                                                client: Client) -> None:
    assert [n["name"] for n in await client.list_namespaces()] == ["default"]
    assert (await client.describe_namespace())["retention"] == "30d"
    async with await Client.connect(cluster.url, namespace="shop") as shop:
        # Every route of an unregistered namespace: 404 NamespaceNotFound.
        with pytest.raises(RPCError) as refused:
            await shop.start_workflow(ApprovalWorkflow.run, id=_id("w"), task_queue="q-nobody")
        assert (refused.value.status, refused.value.error_type) == (404, "NamespaceNotFound")
        with pytest.raises(RPCError) as refused:
            await shop.list_schedules()
        assert refused.value.error_type == "NamespaceNotFound"

        created = await client.create_namespace("shop", retention="3d", description="The shop",
                                                owner_email="ops@example.com")
        assert (created["name"], created["retention"], created["retention_ms"]) == ("shop", "3d", 3 * 86_400_000)
        # Usable at once: the frontend that created it knows it.
        handle = await shop.start_workflow(ApprovalWorkflow.run, id=_id("w"), task_queue="q-nobody")
        assert (await handle.describe())["status"] == "Running"

        updated = await client.update_namespace("shop", retention="12h")
        assert (updated["retention"], updated["description"]) == ("12h", "The shop")
        assert (await shop.describe_namespace())["retention_ms"] == 12 * 3_600_000
        assert [n["name"] for n in await client.list_namespaces()] == ["default", "shop"]

    with pytest.raises(RPCError) as refused:
        await client.create_namespace("shop", retention="1d")
    assert (refused.value.status, refused.value.error_type) == (409, "NamespaceAlreadyExists")
    for retention, field in (("10s", "retention"), ("soon", "retention")):
        with pytest.raises(RPCError) as refused:
            await client.create_namespace("other", retention=retention)
        assert (refused.value.status, refused.value.field) == (400, field)
    for dots in (".", ".."):  # the pattern's characters, but a path's dot segment: no client could reach it
        with pytest.raises(RPCError) as refused:
            await client.create_namespace(dots, retention="1d")
        assert (refused.value.status, refused.value.field) == (400, "name")
    assert (await client.create_namespace("..a.", retention="1d"))["name"] == "..a."
    with pytest.raises(RPCError) as refused:
        await client.update_namespace("nowhere", retention="1d")
    assert (refused.value.status, refused.value.error_type) == (404, "NamespaceNotFound")
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.url + "/openapi.json") as resp:
            paths = (await resp.json())["paths"]
    assert "post" in paths["/api/v1/namespaces"] and "patch" in paths["/api/v1/namespaces/{namespace}"]


async def test_a_command_for_an_unregistered_namespace_goes_to_the_dlq(cluster: Cluster) -> None:
    bootstrap = cluster.settings.kafka_bootstrap
    wid = _id("ghost")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        value = ingress.encode_start("ghost", wid, "EchoWorkflow", "q", [], request_id="r-1")
        await producer.send_and_wait("kadence.requests", value, key=f"ghost/{wid}".encode())
    finally:
        await producer.stop()
    letters = await eventually(lambda: dead_letters.list_dead_letters(bootstrap), what="a dead letter")
    assert "namespace 'ghost' is not registered" in letters[0].reason
    assert cluster.pool is not None
    assert await cluster.pool.fetchval("SELECT count(*) FROM executions WHERE namespace = 'ghost'") == 0


@pytest.fixture
async def scratch_dsn(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    async with new_database(postgres, "scratch") as dsn:
        yield dsn


async def test_closed_runs_past_retention_are_deleted_open_ones_stay(quick: Cluster, scratch_dsn: str) -> None:
    async with await Client.connect(quick.url) as client:
        await client.create_namespace("brief", retention="1s")
        async with await Client.connect(quick.url, namespace="brief") as brief:
            open_run = await brief.start_workflow(ApprovalWorkflow.run, id=_id("open"), task_queue="q-nobody")
            closed = await brief.start_workflow(ApprovalWorkflow.run, id=_id("closed"), task_queue="q-nobody")
            kept = await client.start_workflow(ApprovalWorkflow.run, id=_id("kept"), task_queue="q-nobody")
            await closed.terminate("done with it")
            await kept.terminate("done with it too")
            run_id = (await closed.describe())["run_id"]

            async def gone() -> bool:
                try:
                    await closed.describe()
                except WorkflowNotFoundError:
                    return True
                return False

            await eventually(gone, timeout=20, what="the closed run deleted")
            pool = quick.pool
            assert pool is not None
            for table in ("executions", "history_events", "timers", "request_ids", "run_start_offsets"):
                assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE run_id = $1", run_id) == 0, table
            assert await pool.fetchval("SELECT count(*) FROM current_executions WHERE workflow_id = $1",
                                       closed.workflow_id) == 0
            # The open run of the same namespace, and a closed run of the default one (30 days), stay.
            assert (await open_run.describe())["status"] == "Running"
            assert (await kept.describe())["status"] == "Terminated"
            assert quick.history.retention.deleted_runs >= 1

            # The audit log keeps the run: the audit does not count it as missing, and a rebuild
            # into a scratch database restores it for inspection.
            settings = quick.settings
            report = await eventually(lambda: _clean(settings.kafka_bootstrap, settings.database_url),
                                      what="a clean audit")
            assert report.runs >= 3
            rebuilt = await audit(settings.kafka_bootstrap, None, rebuild_into=scratch_dsn)
            assert rebuilt.rebuilt["executions"] >= 3
            conn = await asyncpg.connect(scratch_dsn)
            try:
                assert await conn.fetchval("SELECT status FROM executions WHERE run_id = $1", run_id) == "Terminated"
            finally:
                await conn.close()


_SCHEDULED_ID = re.compile(r"^tick-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


async def test_a_schedule_fires_pauses_unpauses_triggers_and_survives_a_restart(quick: Cluster) -> None:
    client = await Client.connect(quick.url)
    cluster = quick
    try:
        # Nobody polls q-nobody: the first run stays open, and with overlap skip the rest are skipped.
        await client.create_schedule("stuck", ApprovalWorkflow.run, task_queue="q-nobody", interval="1s",
                                     overlap_policy="skip")
        stuck = await eventually(lambda: _described(client, "stuck", lambda d: d["actions_skipped"] >= 2),
                                 timeout=20, what="later firings skipped")
        assert stuck["actions_started"] == 1

        created = await client.create_schedule("tick", EchoWorkflow.run, "hi", task_queue="q-sched",
                                               interval="1s", overlap_policy="skip", catchup_window="1m")
        assert len(created["next_action_times"]) == 5 and created["spec"]["interval"] == "1s"
        async with Worker(client, task_queue="q-sched", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            fired = await eventually(lambda: _described(client, "tick", lambda d: d["actions_started"] >= 2),
                                     timeout=20, what="two firings")
            first = fired["recent_actions"][0]["workflow_id"]
            assert _SCHEDULED_ID.match(first), first
            assert await client.get_workflow_handle(first).result(timeout=20) == "hi"

            paused = await client.pause_schedule("tick", note="maintenance")
            assert (paused["paused"], paused["note"]) == (True, "maintenance")
            count = (await client.describe_schedule("tick"))["actions_started"]
            rounds = cluster.history.scheduler.rounds
            await eventually(lambda: cluster.history.scheduler.rounds >= rounds + 3, what="scheduler rounds")
            assert (await client.describe_schedule("tick"))["actions_started"] == count  # nothing while paused

            triggered = await client.trigger_schedule("tick")  # runs even while paused
            assert _SCHEDULED_ID.match(triggered), triggered
            await eventually(lambda: _exists(client, triggered), what="the triggered workflow")
            assert await client.get_workflow_handle(triggered).result(timeout=20) == "hi"

            await client.unpause_schedule("tick", note="back")
            await eventually(lambda: _described(client, "tick", lambda d: d["actions_started"] >= count + 2),
                             timeout=20, what="firings after unpause")
        before = (await client.describe_schedule("tick"))["actions_started"]
        await client.close()

        # Every service stops and starts again on the same PostgreSQL and broker.
        await cluster.stop()
        cluster = Cluster(dataclasses.replace(quick.settings, instance_id=_id("again")))
        await cluster.start()
        client = await Client.connect(cluster.url)
        async with Worker(client, task_queue="q-sched", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
            after = await eventually(lambda: _described(client, "tick",
                                                        lambda d: d["actions_started"] >= before + 2),
                                     timeout=30, what="firings after the restart")
        ids = [a["workflow_id"] for a in after["recent_actions"] if a["workflow_id"]]
        assert len(ids) == len(set(ids))
        assert [s["schedule_id"] for s in await client.list_schedules()] == ["stuck", "tick"]
        await client.delete_schedule("tick")
        with pytest.raises(RPCError) as refused:
            await client.describe_schedule("tick")
        assert (refused.value.status, refused.value.error_type) == (404, "ScheduleNotFound")
    finally:
        await client.close()
        if cluster is not quick:
            await cluster.stop()


async def _clean(bootstrap: str, dsn: str) -> object:
    report = await audit(bootstrap, dsn)
    assert report.clean, [str(d) for d in report.divergences]
    return report


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except WorkflowNotFoundError:
        return False
    return True


async def _described(client: Client, schedule_id: str, check: object) -> dict[str, object] | None:
    described = await client.describe_schedule(schedule_id)
    assert callable(check)
    return described if check(described) else None


async def test_overlap_policies_buffer_one_terminate_other_and_allow_all(quick: Cluster) -> None:
    # Nobody polls q-nobody, so every run a schedule starts stays open until ended here.
    async with await Client.connect(quick.url) as client:
        for policy in ("buffer_one", "terminate_other", "allow_all"):
            await client.create_schedule(policy, ApprovalWorkflow.run, task_queue="q-nobody", interval="1s",
                                         overlap_policy=policy)
        # allow_all: a run per firing, all open at once.
        await eventually(lambda: _described(client, "allow_all", lambda d: d["actions_started"] >= 3),
                         timeout=20, what="allow_all starts")
        # terminate_other: each firing ends the previous run.
        swapped = await eventually(lambda: _described(client, "terminate_other",
                                                      lambda d: d["actions_started"] >= 2), timeout=20)
        first = swapped["recent_actions"][0]["workflow_id"]
        await eventually(lambda: _status_is(client, first, "Terminated"), what="the previous run terminated")
        # buffer_one: one firing held while the first run is open, later ones dropped ...
        held = await eventually(lambda: _described(client, "buffer_one",
                                                   lambda d: d["buffered"] and d["actions_skipped"] >= 1),
                                timeout=20, what="a firing buffered")
        assert held["actions_started"] == 1
        # ... and started once the first run closes.
        await client.get_workflow_handle(held["last_workflow_id"]).terminate("make room")
        after = await eventually(lambda: _described(client, "buffer_one", lambda d: d["actions_started"] == 2),
                                 timeout=20, what="the buffered firing started")
        started = [a for a in after["recent_actions"] if a["result"] == "started"]
        assert (started[-1]["how"], started[-1]["scheduled_time"]) == ("buffered", held["buffered"])


async def _status_is(client: Client, workflow_id: str, status: str) -> bool:
    return bool((await client.get_workflow_handle(workflow_id).describe())["status"] == status)


async def test_retention_and_schedules_are_metered(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    from services.common import telemetry

    from .test_metrics import _value

    # The meter provider first: the services take their instruments when they start.
    signals = telemetry.setup_from_env("kadence-test", traces="none", metrics_port=0)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, min_retention_ms=1000,
                        retention_interval_ms=200, scheduler_interval_ms=200)
    cluster = Cluster(settings)
    await cluster.start()
    try:
        async with await Client.connect(cluster.url) as client:
            await client.create_namespace("brief", retention="1s")
            await client.create_schedule("metered", ApprovalWorkflow.run, task_queue="q-nobody", interval="1s")
            async with await Client.connect(cluster.url, namespace="brief") as brief:
                handle = await brief.start_workflow(ApprovalWorkflow.run, id=_id("gone"), task_queue="q-nobody")
                await handle.terminate("done")

            async def scraped() -> str:
                assert signals.metrics_url is not None
                async with aiohttp.ClientSession() as http, http.get(signals.metrics_url) as resp:
                    text = await resp.text()
                assert _value(text, "kadence_retention_rows_deleted_total", kadence_table="executions") >= 1
                assert _value(text, "kadence_schedule_actions_total", kadence_result="started") >= 1
                return text

            text = await eventually(scraped, timeout=20, what="retention and schedule metrics")
            assert _value(text, "kadence_retention_rows_deleted_total", kadence_table="history_events") >= 3
    finally:
        await cluster.stop()
        signals.shutdown()


async def test_records_naming_made_up_namespaces_share_reads_and_one_created_just_now_is_taken(
        cluster: Cluster, client: Client) -> None:
    """A producer writing records with made-up namespaces straight to kadence.requests costs
    history a read of the namespaces per batch at most, not per record; a namespace refused a
    moment ago, then created, is taken at once (no belief in the earlier miss)."""
    bootstrap = cluster.settings.kafka_bootstrap
    assert cluster.history is not None and cluster.history.pool is not None
    made_up = 200
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(made_up):
            wid = _id("w")
            await producer.send("kadence.requests", ingress.encode_start(f"made-up-{i}", wid, "EchoWorkflow", "q", []),
                                key=f"made-up-{i}/{wid}".encode())
        shop = _id("shop")  # a record sent before its namespace exists
        await producer.send("kadence.requests", ingress.encode_start(shop, "w", "EchoWorkflow", "q", []),
                            key=f"{shop}/w".encode())
        await producer.flush()
    finally:
        await producer.stop()
    letters = await eventually(lambda: _at_least(dead_letters.list_dead_letters(bootstrap), made_up + 1),
                               timeout=60, what="every record dead-lettered")
    assert sum("is not registered" in letter.reason for letter in letters) == made_up + 1
    registry = cluster.history.namespaces
    assert registry.reads < made_up / 2, registry.reads  # a read per record before
    await client.create_namespace(shop, retention="1d")
    async with ingress.KafkaIngress(bootstrap) as kafka_ingress:
        reply = await kafka_ingress.start_workflow(shop, _id("w"), "EchoWorkflow", "q-nobody", [])
    assert reply.ok, reply


async def _at_least(letters: Awaitable[list[dead_letters.DeadLetterEntry]], count: int) -> list[dead_letters.DeadLetterEntry]:
    found = await letters
    assert len(found) >= count, len(found)
    return found
