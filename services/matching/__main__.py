"""``python -m services.matching``: one matching instance, configured from the environment."""

from __future__ import annotations

import contextlib

from services.common import loop as _loop
from services.common.config import settings_or_exit
from services.common.runner import run_service
from services.common.usage import service_parser

from .service import MatchingService


def main(argv: list[str] | None = None) -> None:
    service_parser("matching", "Kadence matching: the task queues workers poll (long polls over kadence.tasks)."
                   " Configured from the environment; it takes no arguments.").parse_args(argv)
    settings = settings_or_exit("matching")
    with contextlib.suppress(KeyboardInterrupt):
        _loop.run(run_service(MatchingService(settings), settings, "matching"))


if __name__ == "__main__":
    main()
