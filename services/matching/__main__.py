"""``python -m services.matching``: one matching instance, configured from the environment."""

from __future__ import annotations

import contextlib

from services.common import loop as _loop
from services.common.config import Settings
from services.common.runner import run_service

from .service import MatchingService


def main() -> None:
    settings = Settings.from_env()
    with contextlib.suppress(KeyboardInterrupt):
        _loop.run(run_service(MatchingService(settings), settings, "matching"))


if __name__ == "__main__":
    main()
