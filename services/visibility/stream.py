"""The visibility projection as a faust-streaming app over ``kadence.history``: the
standalone form (``python -m services.visibility``), for a deployment that runs it apart
from the services. ``kadence dev`` runs the same projection in process (``consumer.py``).

Configured as the audit app is (``services/history/audit/stream.py``): at-least-once (the store
skips events a row already has, so a redelivery is harmless), a short session timeout so
the group forms quickly, no topic declared here, state in memory. Records are taken in
batches and each batch is one statement; faust commits the offsets once the batch's
events are acknowledged, that is after the write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import asyncpg
import faust

from services.common import db, faust_app, kafka, outage, telemetry
from services.common.kafka import faust_credentials

from . import projection, shortcut, store
from .consumer import record_delay

log = logging.getLogger(__name__)

APP_ID = "kadence-visibility-stream"
BATCH = 1000
BATCH_WITHIN_S = 0.2
# The faust consumer group's session timeout, in seconds (listed by --help, __main__.py).
SESSION_TIMEOUT_ENV = "KADENCE_VISIBILITY_SESSION_TIMEOUT_S"
SESSION_TIMEOUT_DEFAULT_S = 10.0


def create_app(bootstrap: str, dsn: str, *, session_timeout_s: float = 10.0, app_id: str = APP_ID,
               datadir: str | None = None) -> faust.App:
    """The faust app; ``datadir`` is faust's working directory (default: ``visibility/`` under
    the Kadence state directory, never the current directory)."""
    if datadir is None:
        from services.common.paths import state_dir

        datadir = str(state_dir() / "visibility")
    # faust makes only the last level; on a clean machine the state directory is missing too.
    Path(datadir).mkdir(parents=True, exist_ok=True)
    app = faust_app.App(  # reads past a record the Kafka client cannot unpack
        app_id,
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        processing_guarantee="at_least_once",  # no Kafka transactions needed: the writes are idempotent
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # kadence.history belongs to the services
        broker_credentials=faust_credentials(),  # TLS/SASL from the environment, as every client
        web_enabled=False,
        store="memory://",
    )
    history = app.topic(kafka.HISTORY, key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw")
    pools: list[asyncpg.Pool] = []

    @app.task  # type: ignore[untyped-decorator]
    async def connect() -> None:
        await db.migrate(dsn)
        pools.append(await db.create_pool(dsn, max_size=2))

    @app.agent(history)
    async def project(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(BATCH, within=BATCH_WITHIN_S):
            updates = shortcut.fold(values, _skipped)
            while not pools:  # the connect task has not finished yet
                await app.sleep(0.1)
            backoff = 0.1
            while True:
                try:
                    await store.apply(pools[0], updates)
                    break
                except outage.DATABASE_ERRORS:
                    # Heal: the same batch again until the database takes it (nothing is acknowledged).
                    log.exception("writing %d visibility rows failed; retrying in %.1fs", len(updates), backoff)
                    await app.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            record_delay(updates)

    return app


def _skipped(index: int, exc: projection.Skipped) -> None:
    log.warning("visibility: skipping a record of %s: %s", kafka.HISTORY, exc)


async def start_problem(bootstrap: str, dsn: str) -> str | None:
    """Why visibility cannot start (its PostgreSQL unusable, no broker, no kadence.history), or
    None: said in one line, rather than as the traceback of faust's crashed worker."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except outage.DATABASE_ERRORS as exc:
        return (f"cannot use PostgreSQL at {db.without_password(dsn)} (KADENCE_DATABASE_URL):"
                f" {type(exc).__name__}: {exc}")
    await conn.close()
    return await kafka.history_topic_problem(bootstrap)


def check_start(bootstrap: str, dsn: str) -> None:
    """End the program (exit 1, as every service) when :func:`start_problem` finds one."""
    problem = asyncio.run(start_problem(bootstrap, dsn))
    if problem is not None:
        raise SystemExit(f"visibility: {problem}")


def main() -> None:
    bootstrap = os.environ.get("KADENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    dsn = os.environ.get("KADENCE_DATABASE_URL", "")
    if not dsn:
        raise SystemExit("KADENCE_DATABASE_URL is not set (a PostgreSQL DSN)")
    check_start(bootstrap, dsn)
    session = float(os.environ.get(SESSION_TIMEOUT_ENV) or SESSION_TIMEOUT_DEFAULT_S)
    # Metrics (kadence_visibility_delay_seconds) when KADENCE_METRICS_PORT is set, as every service.
    telemetry.setup_from_env("kadence-visibility")
    app = create_app(bootstrap, dsn, session_timeout_s=session)
    if len(sys.argv) == 1:
        sys.argv += ["worker", "--loglevel=info"]
    app.main()
