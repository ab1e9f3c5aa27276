"""Operator tools pointed at nothing, or at the wrong thing, say so in one line and exit 2
(audit keeps 1 for "divergence found"); a re-drive of an offset that holds no dead letter
is refused; the continuous audit starts on a clean machine and says what it audits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import kafka
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from tests.helpers import eventually
from tests.processes import stop_group

pytestmark = pytest.mark.timeout(120)


async def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


async def test_dlq_and_audit_with_no_broker_exit_2_in_one_line() -> None:
    nothing = f"127.0.0.1:{free_port()}"
    for args in (["dlq", "list"], ["dlq", "redrive", "--offset", "3"], ["dlq", "redrive", "--all"],
                 ["audit", "--no-progress"], ["audit"]):
        code, output = await _run("-m", "kadence.cli", *args, "--bootstrap", nothing)
        assert code == 2, (args, output)
        assert f"cannot reach the Kafka broker at {nothing}" in _one_line(output), args


async def test_audit_with_a_missing_database_exits_2_in_one_line(broker: EmbeddedBroker,
                                                                  postgres: EmbeddedPostgres) -> None:
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    base, _, query = postgres.dsn.partition("?")
    missing = base.rsplit("/", 1)[0] + "/no_such_database" + (f"?{query}" if query else "")
    code, output = await _run("-m", "kadence.cli", "audit", "--no-progress", "--bootstrap", broker.bootstrap,
                              "--dsn", missing)
    assert code == 2, output
    assert "cannot use the database of --dsn" in _one_line(output)
    assert "InvalidCatalogNameError" in output
    # No server there at all.
    code, output = await _run("-m", "kadence.cli", "audit", "--no-progress", "--bootstrap", broker.bootstrap,
                              "--dsn", f"postgresql://u:secret@127.0.0.1:{free_port()}/db")
    assert code == 2, output
    line = _one_line(output)
    assert "cannot use the database of --dsn" in line and "secret" not in line
    code, output = await _run("-m", "kadence.cli", "audit", "--no-progress", "--bootstrap", broker.bootstrap,
                              "--rebuild-into", missing)
    assert code == 2 and "cannot use the database of --rebuild-into" in _one_line(output), output


async def test_redrive_of_an_offset_with_no_dead_letter_says_so(broker: EmbeddedBroker) -> None:
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    code, output = await _run("-m", "kadence.cli", "dlq", "redrive", "--offset", "999", "--offset", "7",
                              "--bootstrap", broker.bootstrap)
    assert code == 2, output
    assert "no dead letter at offset(s) 7, 999 of kadence.dlq" in _one_line(output)


async def test_stream_audit_with_no_broker_exits_2(tmp_path: Path) -> None:
    code, output = await _run("-m", "services.history.audit.stream", cwd=tmp_path,
                              env={"KADENCE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                                   "KADENCE_HOME": str(tmp_path / "home")})
    assert code == 2
    assert "cannot reach the Kafka broker" in _one_line(output)


async def test_stream_audit_creates_its_state_directory_and_says_what_it_audits(broker: EmbeddedBroker,
                                                                                tmp_path: Path) -> None:
    await kafka.ensure_topics(broker.bootstrap, 2, 2)
    home = tmp_path / "clean" / "home"  # nothing of it exists, as on a new machine
    log = tmp_path / "stream.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.history.audit.stream"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "KADENCE_KAFKA_BOOTSTRAP": broker.bootstrap, "KADENCE_HOME": str(home),
                 "KADENCE_AUDIT_SESSION_TIMEOUT_S": "2"})
    try:
        def started() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return f"auditing kadence.history on {broker.bootstrap}" in log.read_text()

        await eventually(started, timeout=30, what="the stream audit's start line")
        assert (home / "audit").is_dir()
        # Still running a moment later: the worker came up rather than crashing on the directory.
        await eventually(lambda: "Traceback" not in log.read_text() and process.poll() is None
                         and "Starting..." in log.read_text(), timeout=20, what="the worker running")
    finally:
        stop_group(process)  # faust may linger after SIGTERM: its group, then firmly
