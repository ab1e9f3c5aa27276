"""The data-directory lock (services/common/dirlock.py), across real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.common.dirlock import LOCK_FILE, DirectoryInUse, DirectoryLock

_HOLD = """
import sys, time
from pathlib import Path
from services.common.dirlock import DirectoryLock
lock = DirectoryLock.acquire(Path(sys.argv[1]), api="http://127.0.0.1:1234")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_holder_is_refused_with_the_first_named_and_a_killed_one_releases(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "d")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(DirectoryInUse) as info:
            DirectoryLock.acquire(tmp_path / "d")
        assert info.value.holder.pid == holder.pid
        assert str(info.value.holder) == f"pid {holder.pid}, API http://127.0.0.1:1234"
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    # Killed: the kernel dropped the lock, and the stale description is replaced.
    lock = DirectoryLock.acquire(tmp_path / "d", api="http://127.0.0.1:5678")
    try:
        assert str((tmp_path / "d" / LOCK_FILE).read_text()).count("5678") == 1
    finally:
        lock.release()
    DirectoryLock.acquire(tmp_path / "d").release()  # released: free again


def test_one_process_cannot_lock_twice(tmp_path: Path) -> None:
    # flock locks belong to the open file: a second open in the same process is refused too.
    lock = DirectoryLock.acquire(tmp_path)
    try:
        with pytest.raises(DirectoryInUse):
            DirectoryLock.acquire(tmp_path)
    finally:
        lock.release()
