"""The programming model while history is killed (-9) and started again. Parents and children:
no child started twice, none left running against its parent-close policy, each parent sees
each child's result exactly once. Signals streaming in across continue-as-new reach one run
once; an update accepted before the kill and asked again after it runs once. History runs as
its own process (``python -m services.history``); frontend and matching here; real broker
and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from kadence import Client, Worker, activity, workflow
from kadence.workflow import ParentClosePolicy
from services.common import command_notices, db
from services.common.embedded import EmbeddedBroker
from services.frontend import FrontendService
from services.matching import MatchingService
from tests.helpers import eventually

from .test_command_notices import _history_process, end_processes
from .test_hostile_model import Lingerer
from .test_hostile_notices import _separate_services

pytestmark = pytest.mark.timeout(240)
POLICIES = [ParentClosePolicy.TERMINATE, ParentClosePolicy.REQUEST_CANCEL, ParentClosePolicy.ABANDON]
KILLED = asyncio.Event()
ENTERED: Counter[str] = Counter()


@activity.defn(name="kid_work")
async def kid_work(child_id: str) -> str:
    """Held until history has been killed, so the kill finds children running."""
    ENTERED[child_id] += 1
    await KILLED.wait()
    return f"done {child_id}"


@workflow.defn
class Kid:
    @workflow.run
    async def run(self, child_id: str) -> str:
        return await workflow.execute_activity(kid_work, child_id, start_to_close_timeout=timedelta(seconds=60))


@workflow.defn
class Family:
    """Starts a child under each policy and returns their results."""

    @workflow.run
    async def run(self) -> list[str]:
        wid = workflow.info().workflow_id
        handles = [await workflow.start_child_workflow(Kid.run, f"{wid}-{p.value}", id=f"{wid}-{p.value}",
                                                       parent_close_policy=p) for p in POLICIES]
        return list(await asyncio.gather(*handles))


@workflow.defn
class Leaver:
    """Starts a child under each policy and closes at once, leaving them to their policies."""

    @workflow.run
    async def run(self) -> str:
        wid = workflow.info().workflow_id
        for p in POLICIES:
            await workflow.start_child_workflow(Lingerer.run, id=f"{wid}-{p.value}", parent_close_policy=p)
        return "left"


class _HistoryApart:
    """History as its own process, frontend and matching here (notices on between them);
    ``kill_and_restart`` kills history (-9) and starts it again."""

    def __init__(self, broker: EmbeddedBroker, dsn: str, log: Path) -> None:
        self.broker, self.dsn, self.log = broker, dsn, log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""

    async def __aenter__(self) -> _HistoryApart:
        settings, self.env = await _separate_services(self.broker, self.dsn)
        self.procs.append(_history_process(self.env, self.log))
        self.pool = await db.create_pool(self.dsn)
        self.matching = MatchingService(settings, pool=self.pool)
        self.frontend: FrontendService | None = None
        try:
            await self.matching.start()
            self.frontend = FrontendService(settings, pool=self.pool)
            await self.frontend.start()
            self.url = self.frontend.url
            await eventually(self._owners_serve, timeout=60, every=0.1, what="history owning both shards")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _owners_serve(self) -> bool:
        if self.procs[-1].poll() is not None:
            pytest.fail(f"the history process exited; see {self.log}")
        rows = await self.pool.fetch("SELECT owner FROM shards")
        return len(rows) == 2 and all(command_notices.owner_address(r["owner"]) for r in rows)

    def kill_and_restart(self) -> None:
        self.procs[-1].kill()
        self.procs[-1].wait(timeout=10)
        self.procs.append(_history_process(self.env, self.log))

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.frontend is not None:
                await self.frontend.stop()
            await self.matching.stop()
            await self.pool.close()
        finally:
            end_processes(self.procs)


async def test_children_under_each_policy_while_history_is_killed_and_restarted(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    KILLED.clear()
    ENTERED.clear()
    families = [f"family-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    leavers = [f"leaver-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    tq = "q-children-killed"
    try:
        async with _HistoryApart(broker, fresh_dsn, tmp_path / "history.log") as apart, \
                await Client.connect(apart.url, namespace="default") as client, \
                Worker(client, task_queue=tq, workflows=[Family, Kid, Lingerer, Leaver], activities=[kid_work]):
            handles = [await client.start_workflow(Family.run, id=wid, task_queue=tq) for wid in families]
            leaving = [asyncio.create_task(client.start_workflow(Leaver.run, id=wid, task_queue=tq))
                       for wid in leavers]
            # The children's activities are held until after the kill: every family waits on
            # its children across it; the leavers' children start and close around it.
            await eventually(lambda: len(ENTERED) >= 1, timeout=60, what="a child running")
            apart.kill_and_restart()
            KILLED.set()
            handles += await asyncio.wait_for(asyncio.gather(*leaving), 90)
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            for wid, result in zip(families + leavers, results, strict=True):
                if wid in families:
                    assert result == [f"done {wid}-{p.value}" for p in POLICIES], (wid, result)
                else:
                    assert result == "left"

            async def policies_applied() -> bool:
                for wid in leavers:
                    statuses = [(await client.get_workflow_handle(f"{wid}-{p.value}").describe())["status"]
                                for p in POLICIES]
                    if statuses != ["Terminated", "Canceled", "Running"]:
                        raise AssertionError(f"{wid}: children {statuses}")
                return True

            await eventually(policies_applied, timeout=60, every=0.2, what="each leaver's children as their policy says")
            # Each child once; each family saw each of its children's results once.
            for wid in families + leavers:
                for p in POLICIES:
                    cid = f"{wid}-{p.value}"
                    runs = await apart.pool.fetchval("SELECT count(*) FROM executions WHERE workflow_id = $1", cid)
                    assert runs == 1, (cid, runs)
                    starts = [e["event_type"] for e in await client.get_workflow_handle(cid).history()]
                    assert starts.count("WorkflowExecutionStarted") == 1, (cid, starts)
            for h in handles:
                kinds = Counter(e["event_type"] for e in await h.history())
                expected_done = 3 if h.workflow_id in families else 0
                assert (kinds["StartChildWorkflowExecutionInitiated"], kinds["ChildWorkflowExecutionStarted"],
                        kinds["ChildWorkflowExecutionCompleted"]) == (3, 3, expected_done), (h.workflow_id, kinds)
            # (An activity may run twice across the kill, rule 7; what the parents saw is checked above.)
            assert set(ENTERED) == {f"{wid}-{p.value}" for wid in families for p in POLICIES}
    finally:
        KILLED.set()


async def test_signals_across_continue_as_new_and_an_update_while_history_is_killed_and_restarted(
        broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> None:
    """Signals stream in (each call retried by the client with its request id) while the run
    continues as new every three, and an update accepted before the kill is asked again with
    its id after it: every signal reaches one run once, the update runs once."""
    from .test_hostile_model import Batches, Held

    sent = [f"s{i}" for i in range(30)]
    tq = "q-signals-killed"
    async with _HistoryApart(broker, fresh_dsn, tmp_path / "history.log") as apart, \
            await Client.connect(apart.url, namespace="default") as client, \
            Worker(client, task_queue=tq, workflows=[Batches, Held]):
        wid, held_id = f"batches-{uuid.uuid4().hex[:6]}", f"held-{uuid.uuid4().hex[:6]}"
        held = await client.start_workflow(Held.run, id=held_id, task_queue=tq)
        await held.start_update(Held.hold, id="u-killed", wait_for_stage="accepted", timeout=30)
        handle = await client.start_workflow(Batches.run, [], len(sent), id=wid, task_queue=tq)
        target = client.get_workflow_handle(wid)
        done: list[str] = []

        async def send() -> None:
            for s in sent:
                await target.signal(Batches.add, s, request_id=f"{wid}-{s}")
                done.append(s)

        sending = asyncio.create_task(send())
        await eventually(lambda: len(done) >= 8, timeout=30, what="a few continue-as-news")
        apart.kill_and_restart()
        assert not sending.done(), "every signal was sent before the kill: it tests nothing"
        again = asyncio.ensure_future(held.execute_update(Held.hold, id="u-killed", timeout=90))
        await asyncio.wait_for(sending, 90)
        await held.signal(Held.release)
        assert await asyncio.wait_for(again, 90) == "done"
        got = await handle.result(timeout=90)
        assert sorted(got) == sorted(sent), sorted(got)
        kinds = [e["event_type"] for e in await held.history()]
    assert kinds.count("WorkflowExecutionUpdateAccepted") == 1, kinds
    assert kinds.count("WorkflowExecutionUpdateCompleted") == 1, kinds
