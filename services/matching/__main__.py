"""``python -m services.matching``: one matching instance, configured from the environment."""

from __future__ import annotations

import contextlib

from services.common import loop as _loop
from services.common.config import settings_or_exit
from services.common.runner import run_service

from .service import MatchingService


def main() -> None:
    settings = settings_or_exit("matching")
    with contextlib.suppress(KeyboardInterrupt):
        _loop.run(run_service(MatchingService(settings), settings, "matching"))


if __name__ == "__main__":
    main()
