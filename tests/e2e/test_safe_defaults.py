"""Safe defaults as processes: the frontend refuses to serve beyond loopback without
authentication unless told --insecure, and a standalone frontend needs task-token keys."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.embedded import free_port

pytestmark = pytest.mark.timeout(120)


async def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KADENCE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**base, **env})
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_standalone_frontend_refuses_a_public_bind_without_auth() -> None:
    env = {"KADENCE_DATABASE_URL": f"postgresql://k@127.0.0.1:{free_port()}/k", "KADENCE_FRONTEND_HOST": "0.0.0.0",
           "KADENCE_FRONTEND_PORT": "0"}
    code, out = await _run(["-m", "services.frontend"], env)
    assert code != 0
    assert "refusing to serve the API on 0.0.0.0 without authentication" in out and "--insecure" in out
    assert "Traceback" not in out
    # --insecure (or KADENCE_INSECURE=1) passes that check; the missing keys are the next thing said.
    for args, extra in ((["--insecure"], {}), ([], {"KADENCE_INSECURE": "1"})):
        code, out = await _run(["-m", "services.frontend", *args], {**env, **extra})
        assert code != 0 and "refusing" not in out
        assert "KADENCE_TASK_TOKEN_KEYS is not set" in out


async def test_dev_refuses_a_public_frontend_host_without_insecure(tmp_path: Path) -> None:
    args = ["-m", "kadence.cli", "dev", "--data-dir", str(tmp_path / "d"), "--port", "0", "--kafka-port", "0"]
    code, out = await _run(args, {"KADENCE_FRONTEND_HOST": "0.0.0.0"})
    assert code == 2, out
    assert "kadence dev: refusing to serve the API on 0.0.0.0 without authentication" in out
    assert "Traceback" not in out
