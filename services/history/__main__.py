"""``python -m services.history``: run history shards against a given broker and DSN."""

from __future__ import annotations

import contextlib

from services.common import loop as _loop
from services.common.colocation import OutboxReplies, OutboxTasks
from services.common.config import settings_or_exit
from services.common.runner import run_service
from services.common.usage import service_parser

from .service import HistoryService


def main(argv: list[str] | None = None) -> None:
    service_parser("history", "Kadence history: the shards applying commands to workflow state, writing"
                   " PostgreSQL and publishing tasks and replies. Configured from the environment;"
                   " it takes no arguments.").parse_args(argv)
    settings = settings_or_exit("history")
    with contextlib.suppress(KeyboardInterrupt):
        # History on its own: tasks and replies go through the outbox (services/common/colocation.py).
        service = HistoryService(settings, tasks=OutboxTasks(), replies=OutboxReplies())
        _loop.run(run_service(service, settings, "history"))


if __name__ == "__main__":
    main()
