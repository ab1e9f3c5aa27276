"""``python -m services.frontend``: one frontend, configured from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from services.common.config import Settings
from services.common.db import migrate
from services.common.kafka import ensure_topics

from .app import FrontendService


async def _main() -> None:
    settings = Settings.from_env()
    if not settings.database_url:
        raise SystemExit("KADENCE_DATABASE_URL must name the PostgreSQL database")
    await migrate(settings.database_url)
    await ensure_topics(settings.kafka_bootstrap, settings.shards, settings.task_partitions)
    service = FrontendService(settings)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())


if __name__ == "__main__":
    main()
