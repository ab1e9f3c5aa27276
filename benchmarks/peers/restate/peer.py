"""Run the Restate peer (server + the Python SDK on hypercorn) and drive the benchmark workloads.

The server and hypercorn come from the scratch directory of ``install.py``; both listen on
127.0.0.1 on free ports, the server's data in a temporary directory. The client here is an
aiohttp session without a connection cap (as Kadence's client), one HTTP request per
workflow to the ingress, which answers with the workflow's result.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from services.common.embedded import free_port

from ...bench import ROOT, Roles, _delta, _pct, _wait_line, stop_processes, wall_lateness
from .install import server_binary, venv_python


class RestatePeer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = Path(tempfile.mkdtemp(prefix="restate-bench-"))
        self.children: list[subprocess.Popen[bytes]] = []
        self.roles = Roles()

    async def start(self) -> None:
        ingress, admin, fabric, sdk = free_port(), free_port(), free_port(), free_port()
        env = {**os.environ, "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
               "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}"}
        log = self.tmp / "restate.log"
        with open(log, "wb") as out:
            server = subprocess.Popen([str(server_binary(self.root)), "--no-logo", "--listen-mode", "tcp",
                                       "--bind-ip", "127.0.0.1", "--bind-port", str(fabric), "--base-dir",
                                       str(self.tmp / "data"), "--node-name", "bench"],
                                      env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.children.append(server)
        await _wait_line(log, "Ingress HTTP listening", server)
        log = self.tmp / "hypercorn.log"
        with open(log, "wb") as out:
            service = subprocess.Popen([str(venv_python(self.root)), "-m", "hypercorn",
                                        "benchmarks.peers.restate.service:app", "--bind", f"127.0.0.1:{sdk}"],
                                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                       stderr=out, stdin=subprocess.DEVNULL)
        self.children.append(service)
        await _wait_line(log, "Running on", service)
        self.ingress = f"http://127.0.0.1:{ingress}"
        self.session = self._session()
        async with self.session.post(f"http://127.0.0.1:{admin}/deployments",
                                     json={"uri": f"http://127.0.0.1:{sdk}"}) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"registering the deployment: {resp.status} {await resp.text()}")
        sp = psutil.Process(service.pid)
        self.roles.procs = {"restate": [psutil.Process(server.pid)], "sdk": [sp, *sp.children(recursive=True)],
                            "client": [psutil.Process(os.getpid())]}

    async def reconnect(self) -> None:
        """Drop the kept-alive connections (a new session)."""
        await self.session.close()
        self.session = self._session()

    @staticmethod
    def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                                     timeout=aiohttp.ClientTimeout(total=600))

    async def stop(self) -> None:
        await self.session.close()
        stop_processes(self.children)
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def call(self, workflow: str, key: str, value: Any) -> Any:
        async with self.session.post(f"{self.ingress}/{workflow}/{key}/run", json=value) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{workflow}/{key}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def burst(self, n: int, prefix: str) -> tuple[float, dict[str, float]]:
        """N one-activity workflows at once; seconds taken and CPU seconds of each role."""
        before = self.roles.cpu()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self.call("OneActivity", f"{prefix}-{i}", i) for i in range(n)))
        elapsed = time.perf_counter() - t0
        cpu = _delta(self.roles.cpu(), before)
        assert results == list(range(n)), "a workflow returned the wrong result"
        return elapsed, cpu

    async def latency(self, n: int) -> dict[str, float]:
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            assert await self.call("OneActivity", f"lat-{uuid.uuid4().hex}", i) == i
            samples.append((time.perf_counter() - t0) * 1000)
        return {"p50_ms": _pct(samples, 50), "p95_ms": _pct(samples, 95), "p99_ms": _pct(samples, 99)}

    async def timers(self, n: int, seconds: float = 1.0) -> dict[str, Any]:
        samples = await asyncio.gather(*(self.call("OneTimer", f"timer-{uuid.uuid4().hex}", seconds)
                                         for _ in range(n)))
        return wall_lateness(samples, seconds)
