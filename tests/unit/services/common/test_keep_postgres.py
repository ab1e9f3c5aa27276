"""``kadence dev``'s watch of its PostgreSQL (services/common/child_watch.py keep_postgres):
a start that returns with the server still down (pgserver taking a killed postmaster not yet
reaped for a live one) is not said to have worked; the outage is said once, the return once.

The server's two calls are scripted (running() answers in turn, resume() counts): what is
tested is the watch's logic and what it logs, not PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest

from services.common.child_watch import keep_postgres
from services.common.embedded import EmbeddedPostgres
from services.common.supervision import Fatal


class _Scripted:
    def __init__(self, running: list[bool], fail_starts: int = 0) -> None:
        self.answers = running
        self.fail_starts = fail_starts
        self.starts = 0

    def running(self) -> bool:
        return self.answers.pop(0) if self.answers else True

    def resume(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_starts:
            raise RuntimeError("pg_ctl: could not start server")


async def _watch(pg: _Scripted, fatal: Fatal) -> None:
    task = asyncio.ensure_future(keep_postgres(cast(EmbeddedPostgres, pg), fatal, every=0.001))
    try:
        await asyncio.wait_for(asyncio.shield(fatal.happened.wait()), timeout=0.3)
    except TimeoutError:
        pass
    task.cancel()


async def test_a_start_that_leaves_it_down_is_not_said_to_have_worked(caplog: pytest.LogCaptureFixture) -> None:
    # Down for three looks (resume returned each time, the old postmaster not yet reaped), then up.
    pg = _Scripted([True, False, False, False, True])
    with caplog.at_level(logging.INFO, logger="services.common.child_watch"):
        await _watch(pg, Fatal())
    # Only the watch's own lines: the session's loop may carry other clients' retries.
    said = [r.getMessage() for r in caplog.records if r.name == "services.common.child_watch"]
    assert said == ["kadence dev's PostgreSQL has gone; starting it again",
                    "kadence dev's PostgreSQL is running again"]
    assert pg.starts == 3


async def test_three_failed_starts_in_a_row_are_fatal() -> None:
    pg = _Scripted([False] * 10, fail_starts=3)
    fatal = Fatal()
    await _watch(pg, fatal)
    assert fatal.happened.is_set()
    assert fatal.reason is not None and "did not start again" in fatal.reason
