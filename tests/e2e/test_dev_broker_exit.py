"""`kadence dev` whose broker child dies, or whose PostgreSQL is killed. Broker: the broker kept nothing (it runs in memory) and
nothing starts it again, so every produce failed (503) and every consumer retried for ever
while /health said "ok". The process must die loudly instead (exit 1, naming the broker),
so that a supervisor starts a fresh one; and it must stop its PostgreSQL on the way out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, start_dev, stop_dev

pytestmark = pytest.mark.timeout(120)

# From the broker's death to kadence dev's exit: noticing it (every 0.5 s), stopping the
# services and its PostgreSQL, with room for a loaded machine.
PROMPT_EXIT_S = 8.0


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_dev_exits_non_zero_when_its_broker_dies(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    proc = (await start_dev(tmp_path / "data", log)).process
    try:
        [broker] = [p for p in _children(proc.pid) if "tansu" in _command(p)]
        os.kill(broker, signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kadence dev kept running without its broker: {log.read_text()[-1500:]}")
        took = time.monotonic() - killed
        assert code == 1
        # Promptly: no wait for what needs the dead broker (consumers leaving their groups,
        # visibility catching up), which held the exit about 15 s.
        assert took < PROMPT_EXIT_S, (took, log.read_text()[-1500:])
        after = log.read_text().rsplit("kadence dev: stopping after a fatal error:", 1)[-1]
        assert "broker" in after
        # It stops as it says, not in a traceback from a consumer that lost its broker.
        assert "Traceback" not in after, after[-3000:]
        # Its PostgreSQL stopped with it (the postmaster's pid file goes when it stops).
        pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
        await eventually(lambda: not pid_file.exists(), timeout=30, what="PostgreSQL stopped")
    finally:
        stop_dev(proc)


async def test_dev_starts_its_postgresql_again_when_it_is_killed(tmp_path: Path) -> None:
    """Its PostgreSQL killed, `kadence dev` stalled for ever (nothing started it again, /health
    503): it starts it again, and the services carry on from what it had committed."""
    import aiohttp

    dev = await start_dev(tmp_path / "data", tmp_path / "dev.log")
    proc = dev.process
    url = f"{dev.url}/api/v1/namespaces/default/workflows"
    try:
        async with aiohttp.ClientSession() as http:
            async def start(wid: str) -> int:
                async with http.post(url, json={"workflow_id": wid, "workflow_type": "T", "task_queue": "q"}) as resp:
                    return resp.status
            assert await start("before") == 201
            pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
            os.kill(int(pid_file.read_text().split("\n", 1)[0]), signal.SIGKILL)

            async def started_again() -> bool:
                return await start("after") == 201
            await eventually(started_again, timeout=60, every=0.5, what="a start after PostgreSQL was killed")

            async def read_again() -> bool:
                async with http.get(f"{url}/before") as resp:
                    assert resp.status in (200, 503), resp.status  # 503: retry (Retry-After), never lost
                    return resp.status == 200
            await eventually(read_again, timeout=10, every=0.2, what="a read after PostgreSQL came back")
        assert proc.poll() is None
    finally:
        stop_dev(proc)
