"""A service whose loop dies makes its process exit non-zero (services/common/runner.py)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from services.common.config import Settings
from services.common.runner import run_service
from services.common.supervision import Fatal, watch

pytestmark = pytest.mark.timeout(60)


class DyingService:
    """A service whose one background loop dies of a bug soon after the start."""

    def __init__(self) -> None:
        self.fatal = Fatal()
        self.stopped = False

    async def start(self) -> None:
        async def loop() -> None:
            await asyncio.sleep(0.1)
            raise RuntimeError("a bug in the loop")

        watch(asyncio.create_task(loop()), "the dying loop", self.fatal)

    async def stop(self) -> None:
        self.stopped = True


async def test_run_service_stops_the_service_and_exits_non_zero_on_fatal(broker, fresh_dsn) -> None:
    service = DyingService()
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2)
    try:
        # Not inside a task of its own: asyncio lets a SystemExit out of the event loop.
        with pytest.raises(SystemExit) as exited:
            await run_service(service, settings, "dying")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the runner's, on this test session's loop
            asyncio.get_running_loop().remove_signal_handler(sig)
    # A string code: Python prints it and exits with status 1.
    assert isinstance(exited.value.code, str) and "a bug in the loop" in exited.value.code
    assert service.stopped
