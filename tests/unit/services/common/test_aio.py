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
