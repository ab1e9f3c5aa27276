"""HistoryService.stop (services/history/service.py): every step runs whatever an earlier one raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.config import Settings
from services.history import HistoryService
from tests.unit.services._stop_parts import Failed, Part

pytestmark = pytest.mark.timeout(10)


def _loop(name: str) -> asyncio.Task[None]:
    """A background task as the service's: it runs until cancelled."""
    return asyncio.create_task(asyncio.Event().wait(), name=name)  # type: ignore[arg-type]


async def test_a_failed_health_server_stop_still_stops_every_later_part() -> None:
    stopped: list[str] = []
    history = HistoryService(Settings(database_url="postgresql://nowhere/none", trim_interval_s=0))
    parts: Any = history
    jobs = [_loop("retention"), _loop("scheduler")]
    gate, consumer_task = _loop("gate"), _loop("consumer")
    parts._jobs, parts._gate_task, parts._task = jobs, gate, consumer_task
    parts.health_server = Part("health server", stopped, fails=True)
    parts.trimmer = Part("trimmer", stopped)
    parts._consumer, parts._producer = Part("consumer", stopped), Part("producer", stopped)
    parts.pool = Part("pool", stopped)
    with pytest.raises(Failed):  # raised once the rest is stopped
        await history.stop()
    assert all(t.cancelled() for t in jobs), jobs
    assert gate.cancelled() and consumer_task.cancelled()
    assert stopped == ["health server", "trimmer", "consumer", "producer", "pool"]


async def test_a_job_that_died_is_logged_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []
    history = HistoryService(Settings(database_url="postgresql://nowhere/none", trim_interval_s=0))
    parts: Any = history

    async def dies() -> None:
        raise Failed("the retention job died")

    died = asyncio.create_task(dies(), name="retention")
    await asyncio.wait([died])
    parts._jobs, parts._task = [died], _loop("consumer")
    parts.health_server, parts._consumer = Part("health server", stopped), Part("consumer", stopped)
    parts.pool = Part("pool", stopped)
    await history.stop()  # the death is logged by cancel(), not raised: nothing else failed
    assert parts._task.cancelled()
    assert stopped == ["health server", "consumer", "pool"]
    assert sum("the retention job died" in str(r.exc_info and r.exc_info[1]) for r in caplog.records) == 1
