"""Result waits of the frontend end at shutdown without each registering on one shared future
(services/frontend/engine.py: with 10,000 waits, removing a callback from a list of 10,000
each time was a quadratic cost)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.read_bound import ReadTimedOut
from services.frontend import engine as engine_module
from services.frontend.closed import CloseWatcher
from services.frontend.engine import Engine
from services.frontend.reads import Execution
from tests.helpers import eventually


class _CountingFuture(asyncio.Future[None]):
    added = 0

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        type(self).added += 1
        super().add_done_callback(fn, context=context)


class _Running:
    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str:
        return "Running"


async def test_result_waits_end_at_shutdown_without_registering_on_the_shutdown_future() -> None:
    engine = Engine(instance_id="t", producer=None, replies=None, closes=CloseWatcher(None),  # type: ignore[arg-type]
                    reads=_Running(), matching=None, token_keys=None)  # type: ignore[arg-type]
    engine._shutting_down = _CountingFuture()
    waits = [asyncio.ensure_future(engine.result("ns", f"wf-{i}", f"run-{i}", 30.0, just_started=True))
             for i in range(50)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waits)
    engine._matching = type("M", (), {"release_polls": lambda self: None})()
    engine.end_long_waits()
    answers = await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert answers == [{"status": "Running"}] * 50
    assert _CountingFuture.added == 0


async def test_a_long_result_wait_re_reads_the_run_less_and_less_often(monkeypatch: Any) -> None:
    # The re-read is a safety net for a missed close notification: 10,000 waits re-reading
    # every few seconds slowed the runs they waited for (and so made more re-reads).
    monkeypatch.setattr(engine_module, "_RECHECK", 0.01)
    monkeypatch.setattr(engine_module, "_RECHECK_MAX", 0.16)
    reads = _CountingReads()
    engine = Engine(instance_id="t", producer=None, replies=None, closes=CloseWatcher(None),  # type: ignore[arg-type]
                    reads=reads, matching=None, token_keys=None)  # type: ignore[arg-type]
    assert await engine.result("ns", "wf", "run", 0.6, just_started=True) == {"status": "Running"}
    # 0.01 + 0.02 + 0.04 + 0.08 + 0.16 + 0.16 + ... : about 7 re-reads in 0.6 s, 60 at a fixed 0.01 s.
    assert 3 <= reads.count <= 12


class _CountingReads:
    count = 0

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str:
        self.count += 1
        return "Running"


async def test_a_close_handed_over_answers_the_result_wait_in_one_loop_turn() -> None:
    # The close of a run committed by history in this process wakes its result wait: the
    # answer must not take more loop turns than the wake-up itself (asyncio.wait took two).
    closes = CloseWatcher(None)
    engine = Engine(instance_id="t", producer=None, replies=None, closes=closes,  # type: ignore[arg-type]
                    reads=_Running(), matching=None, token_keys=None)  # type: ignore[arg-type]
    wait = asyncio.ensure_future(engine.result("ns", "wf", "run", 30.0, just_started=True))
    await asyncio.sleep(0.01)
    assert not wait.done()
    answer = {"status": "Completed", "result": "1"}
    closes.closed([("run", answer)])
    await asyncio.sleep(0)
    assert wait.done() and wait.result() == answer


async def test_a_result_wait_that_times_out_says_running() -> None:
    engine = Engine(instance_id="t", producer=None, replies=None, closes=CloseWatcher(None),  # type: ignore[arg-type]
                    reads=_Running(), matching=None, token_keys=None)  # type: ignore[arg-type]
    assert await engine.result("ns", "wf", "run", 0.05, just_started=True) == {"status": "Running"}


class _GivingUp:
    """Reads that give up (ReadTimedOut, as a full share of result reads does) ``times`` times
    before answering: the status ``status``, the row of a run closed ``Completed``."""

    def __init__(self, times: int, status: str = "Running") -> None:
        self.left = times
        self.status_reads = 0
        self.row_reads = 0
        self._status = status

    def _maybe_give_up(self) -> None:
        if self.left > 0:
            self.left -= 1
            raise ReadTimedOut("no database connection for result reads within 5 s", limit="result_reads", slots=2)

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str:
        self.status_reads += 1
        self._maybe_give_up()
        return self._status

    async def waited_execution(self, namespace: str, workflow_id: str, run_id: str | None) -> Execution:
        self.row_reads += 1
        self._maybe_give_up()
        return Execution(namespace, workflow_id, run_id or "run", "T", "q", "Completed", 1, 2, 3,
                         {"status": "Completed", "result": "7"})


def _engine(reads: Any, closes: CloseWatcher | None = None) -> Engine:
    return Engine(instance_id="t", producer=None, replies=None, closes=closes or CloseWatcher(None),  # type: ignore[arg-type]
                  reads=reads, matching=None, token_keys=None)  # type: ignore[arg-type]


async def test_a_wait_whose_look_gives_up_keeps_waiting_and_answers_the_close(monkeypatch: Any) -> None:
    # Before: the read's 503 was the wait's answer, with 30 s of its wait left.
    monkeypatch.setattr(engine_module, "_LOOK_AGAIN", 0.01)
    closes = CloseWatcher(None)
    reads = _GivingUp(times=3)
    wait = asyncio.ensure_future(_engine(reads, closes).result("ns", "wf", "run", 30.0))
    await eventually(lambda: reads.status_reads >= 4, what="the run looked at again after each give-up")
    assert not wait.done()
    answer = {"status": "Completed", "result": "1"}
    closes.closed([("run", answer)])
    assert await asyncio.wait_for(wait, 5) == answer


async def test_a_wait_that_never_saw_its_run_answers_the_read_s_failure_at_its_end(monkeypatch: Any) -> None:
    # The bound holds: a wait whose every read gave up does not guess Running.
    monkeypatch.setattr(engine_module, "_LOOK_AGAIN", 0.01)
    reads = _GivingUp(times=10**6)
    with pytest.raises(ReadTimedOut):
        await asyncio.wait_for(_engine(reads).result("ns", "wf", "run", 0.2), 5)
    assert reads.status_reads > 1


async def test_a_wait_that_saw_its_run_open_answers_running_though_a_later_look_gave_up(monkeypatch: Any) -> None:
    monkeypatch.setattr(engine_module, "_RECHECK", 0.01)
    monkeypatch.setattr(engine_module, "_LOOK_AGAIN", 0.01)
    reads = _OpenThenGivingUp(times=0)
    assert await asyncio.wait_for(_engine(reads).result("ns", "wf", "run", 0.2), 5) == {"status": "Running"}
    assert reads.status_reads > 1


class _OpenThenGivingUp(_GivingUp):
    """The first look finds the run open; every later one gives up."""

    async def status(self, namespace: str, workflow_id: str, run_id: str) -> str:
        self.left = 0 if self.status_reads == 0 else 1
        return await super().status(namespace, workflow_id, run_id)


async def test_a_close_without_its_outcome_is_read_again_until_the_row_answers(monkeypatch: Any) -> None:
    monkeypatch.setattr(engine_module, "_LOOK_AGAIN", 0.01)
    reads = _GivingUp(times=0)
    closes = CloseWatcher(None)
    wait = asyncio.ensure_future(_engine(reads, closes).result("ns", "wf", "run", 30.0, just_started=True))
    await asyncio.sleep(0)
    reads.left = 2  # the row's first two reads give up
    closes.closed([("run", None)])  # type: ignore[list-item]  # a close told without its outcome (too large)
    answer = await asyncio.wait_for(wait, 5)
    assert (answer["status"], answer.get("result"), reads.row_reads) == ("Completed", "7", 3)


async def test_a_wait_naming_no_run_reads_its_current_run_again_after_a_give_up(monkeypatch: Any) -> None:
    monkeypatch.setattr(engine_module, "_LOOK_AGAIN", 0.01)
    reads = _GivingUp(times=2)
    answer = await asyncio.wait_for(_engine(reads).result("ns", "wf", None, 30.0), 5)
    assert answer["status"] == "Completed" and reads.row_reads == 3
