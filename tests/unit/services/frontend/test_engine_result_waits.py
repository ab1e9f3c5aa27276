"""Result waits of the frontend end at shutdown without each registering on one shared future
(services/frontend/engine.py: with 10,000 waits, removing a callback from a list of 10,000
each time was a quadratic cost)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.frontend import engine as engine_module
from services.frontend.closed import CloseWatcher
from services.frontend.engine import Engine


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
