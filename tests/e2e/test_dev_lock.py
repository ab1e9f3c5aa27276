"""One `kadence dev` per data directory: a second refuses, naming the first; after the first is
killed (-9), the directory is free again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from services.common.embedded import free_port
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(180)


def _command(data: Path, port: int, kafka_port: int) -> list[str]:
    return [sys.executable, "-m", "kadence.cli", "dev", "--data-dir", str(data), "--port", str(port),
            "--kafka-port", str(kafka_port)]


async def _running(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(_command(data, port, free_port()), stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def up() -> bool:
        assert proc.poll() is None, f"kadence dev exited: {log.read_text()[-2000:]}"
        return "Kadence is running" in log.read_text()

    await eventually(up, timeout=60, every=0.1, what="kadence dev started")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_second_dev_on_a_data_dir_refuses_and_a_killed_one_frees_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = await _running(data, port, tmp_path / "first.log")
    third: subprocess.Popen[bytes] | None = None
    try:
        second = await asyncio.create_subprocess_exec(
            *_command(data, free_port(), free_port()), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2, err
        assert f"in use by another kadence dev (pid {first.pid}, API http://127.0.0.1:{port})" in err.decode()
        # The first is untouched and still serves.
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200

        first.kill()  # -9: no clean-up, the kernel drops the lock
        first.wait(timeout=30)
        port = free_port()
        third = await _running(data, port, tmp_path / "third.log")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200
    finally:
        first.kill()
        first.wait(timeout=30)
        if third is not None:
            _stop(third)
            assert third.returncode == 0
