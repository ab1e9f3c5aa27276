"""services/common/aio.py: a background task's cancel never aborts the stop that calls it; no I/O."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.aio import cancel
from services.common.supervision import Fatal, watch

pytestmark = pytest.mark.timeout(10)


async def _dies() -> None:
    raise RuntimeError("boom")


async def _dies_when_cancelled() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        raise RuntimeError("cleanup failed")


def _deaths(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError)]


async def test_a_task_that_died_is_logged_once_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.create_task(_dies(), name="dying")
    await asyncio.wait([task])
    with caplog.at_level(logging.ERROR):
        await cancel(task)
        await cancel(task)  # a second stop says nothing more
    [record] = _deaths(caplog)
    assert record.levelno == logging.ERROR and "dying" in record.getMessage()


async def test_a_task_failing_while_cancelled_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.create_task(_dies_when_cancelled())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel(task)
    [record] = _deaths(caplog)
    assert "cleanup failed" in str(record.exc_info[1])  # type: ignore[index]


async def test_a_watched_task_that_died_is_logged_by_its_watcher_alone(caplog: pytest.LogCaptureFixture) -> None:
    fatal = Fatal()
    with caplog.at_level(logging.ERROR):
        task = watch(asyncio.create_task(_dies()), "the dying loop", fatal)
        await asyncio.wait([task])
        await asyncio.sleep(0)  # the done callbacks
        await cancel(task)
    [record] = _deaths(caplog)
    assert record.levelno == logging.CRITICAL and record.getMessage() == "the dying loop died"
    assert fatal.reason == "the dying loop died: RuntimeError('boom')"


async def test_cancel_stops_a_running_task_and_takes_none() -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel(task)
    await cancel(None)
    assert task.cancelled()


async def test_a_task_that_will_not_end_holds_its_cancel_no_longer_than_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    """One that swallows its cancellation held the stop that cancelled it for ever."""
    let_go = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await let_go.wait()  # a bug: it goes on

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)  # it runs, and waits
    try:
        with caplog.at_level(logging.ERROR):
            await asyncio.wait_for(cancel(task, wait_s=0.2), 5)
        assert not task.done()
        assert any("'stubborn' did not end within 0.2 s" in r.getMessage() for r in caplog.records)
    finally:
        let_go.set()
        await asyncio.wait([task])


async def test_the_callers_own_cancellation_is_raised() -> None:
    """cancel() swallowed the cancellation of the stop calling it, with the task's."""
    let_go = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await let_go.wait()

    slow = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel(slow))
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    let_go.set()
    await asyncio.wait([slow])
