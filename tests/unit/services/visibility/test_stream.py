"""``python -m services.visibility`` on a clean machine: its faust app makes its working
directory with every missing parent (faust makes only the last level, and stopped with
FileNotFoundError when the Kadence state directory did not exist yet), and a PostgreSQL or
broker it cannot use is one line naming it (it was the traceback of faust's crashed worker)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.visibility import stream
from services.visibility.stream import create_app


def test_the_working_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    datadir = tmp_path / "state" / "kadence" / "visibility"
    create_app("127.0.0.1:9092", "postgresql://unused", datadir=str(datadir))
    assert datadir.is_dir()


async def test_an_unusable_database_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(dsn: str, **kwargs: object) -> asyncpg.Connection:
        raise ConnectionRefusedError(111, "Connection refused")
    monkeypatch.setattr(asyncpg, "connect", refused)
    problem = await stream.start_problem("127.0.0.1:9092", "postgresql://kadence:s3cret@db.invalid/kadence")
    assert problem == ("cannot use PostgreSQL at postgresql://kadence:***@db.invalid/kadence (KADENCE_DATABASE_URL):"
                       " ConnectionRefusedError: [Errno 111] Connection refused")


def test_a_problem_ends_the_program_with_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_broker(bootstrap: str, dsn: str) -> str:
        return f"cannot reach the Kafka broker at {bootstrap} (KafkaConnectionError); set KADENCE_KAFKA_BOOTSTRAP"
    monkeypatch.setattr(stream, "start_problem", no_broker)
    with pytest.raises(SystemExit) as exited:
        stream.check_start("127.0.0.1:1", "postgresql://unused")
    assert exited.value.code == ("visibility: cannot reach the Kafka broker at 127.0.0.1:1 (KafkaConnectionError);"
                                 " set KADENCE_KAFKA_BOOTSTRAP")
