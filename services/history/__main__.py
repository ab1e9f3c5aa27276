"""``python -m services.history``: run history shards against a given broker and DSN."""

from __future__ import annotations

import contextlib

from services.common import loop as _loop
from services.common.config import Settings
from services.common.runner import run_service

from .service import HistoryService


def main() -> None:
    settings = Settings.from_env()
    with contextlib.suppress(KeyboardInterrupt):
        _loop.run(run_service(HistoryService(settings), settings, "history"))


if __name__ == "__main__":
    main()
