"""watch_child: a child that exits makes the process fatal, naming it and its exit code."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from services.common.child_watch import watch_child
from services.common.supervision import Fatal

pytestmark = pytest.mark.timeout(30)


async def test_a_child_that_exits_is_declared_fatal() -> None:
    fatal = Fatal()
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    await asyncio.wait_for(watch_child(child, "the test child", fatal, every=0.01), 10)
    assert fatal.reason == "the test child exited (code 3)"


async def test_watching_a_running_child_declares_nothing_until_cancelled() -> None:
    fatal = Fatal()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        watcher = asyncio.create_task(watch_child(child, "the test child", fatal, every=0.01))
        await asyncio.sleep(0.2)
        assert not fatal.happened.is_set()
        watcher.cancel()
    finally:
        child.kill()
        child.wait()
