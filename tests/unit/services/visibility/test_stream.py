"""``python -m services.visibility`` on a clean machine: its faust app makes its working
directory with every missing parent (faust makes only the last level, and stopped with
FileNotFoundError when the Kadence state directory did not exist yet)."""

from __future__ import annotations

from pathlib import Path

from services.visibility.stream import create_app


def test_the_working_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    datadir = tmp_path / "state" / "kadence" / "visibility"
    create_app("127.0.0.1:9092", "postgresql://unused", datadir=str(datadir))
    assert datadir.is_dir()
