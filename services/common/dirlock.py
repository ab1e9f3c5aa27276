"""One owner per data directory: an OS file lock held for the life of the process.

``kadence dev`` takes it before it starts anything on its data directory. The lock is an
``flock`` on ``<dir>/kadence.lock``, so the kernel drops it when the process ends however it
ends (kill -9 included): no stale lock to clean up. The file also says who holds it (pid and
API address), so a second process can name the first when it refuses to start.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_FILE = "kadence.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a data directory, as its lock file says (pid 0: not written yet)."""

    pid: int
    api: str

    def __str__(self) -> str:
        if not self.pid:
            return "another process (still starting)"
        return f"pid {self.pid}" + (f", API {self.api}" if self.api else "")


class DirectoryInUse(Exception):
    """Another live process holds the data directory."""

    def __init__(self, directory: Path, holder: LockHolder) -> None:
        super().__init__(f"{directory} is in use by {holder}")
        self.directory = directory
        self.holder = holder


class DirectoryLock:
    """The held lock of one data directory; released by ``release`` or by the process's end."""

    def __init__(self, directory: Path, file: IO[str]) -> None:
        self.directory = directory
        self._file: IO[str] | None = file

    @classmethod
    def acquire(cls, directory: Path, *, api: str = "") -> DirectoryLock:
        """Lock ``directory`` (created if missing) or raise ``DirectoryInUse`` naming the holder."""
        directory.mkdir(parents=True, exist_ok=True)
        # Not truncated on open: the holder's description must survive a refused attempt.
        file = open(directory / LOCK_FILE, "a+", encoding="utf-8")  # held for the process's life
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = _holder(file.read())
            file.close()
            raise DirectoryInUse(directory, holder) from None
        except BaseException:
            file.close()
            raise
        lock = cls(directory, file)
        lock.describe(api)
        return lock

    def describe(self, api: str) -> None:
        """Write this process's pid and API address into the lock file, for a refused second one."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "api": api}) + "\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _holder(text: str) -> LockHolder:
    try:
        data = json.loads(text)
        return LockHolder(int(data["pid"]), str(data.get("api", "")))
    except (ValueError, KeyError, TypeError):
        return LockHolder(0, "")  # the holder has not written it yet
