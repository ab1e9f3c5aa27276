"""schemathesis against a running cluster's /openapi.json: every generated request, valid or
not, gets an answer the document describes (status, content type, body schema), never a
5xx, and a request the document calls invalid is refused.

The cluster runs with authentication on, as the document declares (a bearer on every API
call): the fuzzer presents an admin key, and its calls without one must get 401. The run is
bounded (few examples per operation, a time budget); hooks shorten the waits of long polls,
result waits and queries (schemathesis_hooks.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.frontend.auth import api_key_entry

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
KEY = "fuzz-admin-key"
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "negative_data_rejection", "unsupported_method",
])


@pytest.fixture
async def secured(broker: EmbeddedBroker, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"api_keys": [api_key_entry("fuzz", KEY, [{"namespace": "*",
                                                                             "permissions": ["admin"]}])]}))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, auth_config=str(config))
    async with Cluster(settings) as c:
        yield c


async def test_fuzzing_the_api_finds_no_5xx_and_no_schema_violation(secured: Cluster, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    # A subprocess: schemathesis calls synchronously, and this loop serves the cluster.
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", secured.url + "/openapi.json", "--checks", CHECKS, "--max-examples", "5",
        "--max-time", "45", "--request-timeout", "10", "--seed", "1", "--no-color", "--workers", "1",
        "--generation-deterministic", "-H", f"Authorization: Bearer {KEY}",
        # Run in tmp_path: schemathesis leaves its .schemathesis folder in the working directory.
        cwd=str(tmp_path), env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
                                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert proc.returncode == 0, text[-20_000:]
