"""Result waits' close watcher: in-process closes and the memory of recent ones; no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from services.frontend.closed import RECENT, CloseWatcher

pytestmark = pytest.mark.timeout(10)


def _watcher() -> CloseWatcher:
    return CloseWatcher(pool=None)  # type: ignore[arg-type]  # the pool is only used by start()


async def test_a_wait_that_begins_after_the_close_is_answered_from_memory() -> None:
    watcher = _watcher()
    waiting = watcher.watch("r1")
    answer: dict[str, Any] = {"status": "Completed", "run_id": "r1", "result": "1"}
    watcher.closed([("r1", answer)])
    assert waiting.result() == (True, answer)
    late = watcher.watch("r1")
    assert late.done() and late.result() == (True, answer)
    assert not watcher.watch("r2").done()


async def test_a_notification_after_the_in_process_close_changes_nothing() -> None:
    watcher = _watcher()
    watcher.closed([("r1", {"status": "Completed", "run_id": "r1", "result": "1"})])
    watcher._on_notify(None, 0, "kadence_closed", "r1")  # the same close, announced without its outcome
    assert watcher.watch("r1").result() == (True, {"status": "Completed", "run_id": "r1", "result": "1"})
    watcher._on_notify(None, 0, "kadence_closed", 'r2 {"status": "Failed", "run_id": "r2"}')
    assert watcher.watch("r2").result() == (True, {"status": "Failed", "run_id": "r2"})


async def test_only_the_latest_closes_are_remembered() -> None:
    watcher = _watcher()
    watcher.closed([(f"r{i}", {"status": "Completed"}) for i in range(RECENT + 1)])
    assert not watcher.watch("r0").done() and watcher.watch(f"r{RECENT}").done()
