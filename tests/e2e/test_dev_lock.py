"""One `kadence dev` per data directory: a second refuses, naming the first; after the first is
killed (-9), the directory is free again."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import Dev, dev_command, start_dev, stop_dev

pytestmark = pytest.mark.timeout(180)


async def test_second_dev_on_a_data_dir_refuses_and_a_killed_one_frees_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await start_dev(data, tmp_path / "first.log", shards=None)
    third: Dev | None = None
    try:
        second = await asyncio.create_subprocess_exec(
            *dev_command(data), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2, err
        assert f"in use by another kadence dev (pid {first.process.pid}, API {first.url})" in err.decode()
        # The first is untouched and still serves.
        async with aiohttp.ClientSession() as http, http.get(f"{first.url}/health") as resp:
            assert resp.status == 200

        first.process.kill()  # -9: no clean-up, the kernel drops the lock
        first.process.wait(timeout=30)
        third = await start_dev(data, tmp_path / "third.log", shards=None)
        async with aiohttp.ClientSession() as http, http.get(f"{third.url}/health") as resp:
            assert resp.status == 200
    finally:
        first.process.kill()
        first.process.wait(timeout=30)
        if third is not None:
            stop_dev(third.process)
            assert third.process.returncode == 0
