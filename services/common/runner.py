"""Running one service as its own process until SIGINT/SIGTERM, or until it fails.

A service whose background task died (its ``fatal``, see supervision.py) is stopped and
the process exits with status 1, for its supervisor to start it again.

Telemetry is set up from the environment first (``OTEL_*``, ``KADENCE_METRICS_PORT``;
see ``telemetry.py``), so the service's producers, consumers and HTTP server are
instrumented from their start, and spans still buffered are flushed at the stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from aiokafka.errors import KafkaError

from . import db, kafka, outage, telemetry
from .bind import UnsafeBind
from .config import Settings
from .ingress_auth import IngressConfigError
from .supervision import Fatal


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_service(service: Service, settings: Settings, name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    if not settings.database_url:
        raise SystemExit("KADENCE_DATABASE_URL is not set (a PostgreSQL DSN)")
    try:
        signals = telemetry.setup_from_env(f"kadence-{name}")
    except (UnsafeBind, ValueError) as exc:  # an open metrics endpoint, a short internal key
        raise SystemExit(f"{name}: {exc}") from None
    if signals.metrics_url:
        logging.getLogger(name).info("metrics for Prometheus at %s", signals.metrics_url)
    try:
        await _run(service, settings, name)
    finally:
        signals.shutdown()


async def _run(service: Service, settings: Settings, name: str) -> None:
    await prepare(settings, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except (db.ClusterMismatch, UnsafeBind, IngressConfigError) as exc:
        raise SystemExit(f"{name}: {exc}") from None
    logging.getLogger(name).info("%s is running (instance %s)", name, settings.instance_id)
    fatal: Fatal | None = getattr(service, "fatal", None)
    try:
        reason = await until_stopped(stop, fatal)
    finally:
        await service.stop()
    if reason is not None:
        raise SystemExit(f"{name}: {reason}")  # exit status 1


async def prepare(settings: Settings, name: str) -> None:
    """Migrate PostgreSQL and create the topics; an unreachable or refusing one ends the
    process in one line naming it (exit 1, for the supervisor to try again), not a traceback."""
    try:
        await db.migrate(settings.database_url)
    except outage.DATABASE_ERRORS as exc:
        raise SystemExit(f"{name}: cannot use PostgreSQL at {db.without_password(settings.database_url)}"
                         f" (KADENCE_DATABASE_URL): {type(exc).__name__}: {exc}") from None
    try:
        await kafka.ensure_topics(settings.kafka_bootstrap, settings.shards, settings.task_partitions,
                                 settings.kafka_security)
    except KafkaError as exc:
        raise SystemExit(f"{name}: cannot reach the Kafka broker at {settings.kafka_bootstrap}"
                         f" (KADENCE_KAFKA_BOOTSTRAP): {exc}") from None


async def until_stopped(stop: asyncio.Event, fatal: Fatal | None) -> str | None:
    """Wait for ``stop`` (a signal) or ``fatal``; the fatal reason, or None for a stop."""
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if fatal is not None:
        waits.append(asyncio.ensure_future(fatal.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return fatal.reason if fatal is not None and fatal.happened.is_set() else None
