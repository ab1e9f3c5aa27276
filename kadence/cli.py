"""The ``kadence`` command: ``kadence dev`` runs the whole platform on this machine;
``encode``, ``dlq`` and ``audit`` are the operator tools (kadence/_tools_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.dirlock import DirectoryLock


def state_dir() -> Path:
    base = os.environ.get("KADENCE_HOME") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "kadence")
    return Path(base)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do: connections of a previous run lingering in TIME_WAIT don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# One process on a small machine: two shards commit in parallel while each batch stays
# large. Against four, in alternated 100-timer bursts the wake-up lateness p99 was 0.75
# of it (median of four pairs) and 1,000-workflow bursts took as long.
DEV_SHARDS = 2


async def _dev_shards(dsn: str, asked: int | None, data: Path) -> int | None:
    """The data directory's shard count (recorded when it was created), or None after
    telling why ``asked`` cannot be used with it."""
    import asyncpg

    from services.common import db

    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        recorded = await db.cluster_setting(conn, "shards")
    finally:
        await conn.close()
    if recorded is not None and asked is not None and int(recorded) != asked:
        print(f"kadence dev: {data} was created with --shards {recorded}; a run's timers and tasks belong to"
              f" its shard, so the count cannot change. Start with --shards {recorded}, or use another"
              " --data-dir.", file=sys.stderr)
        return None
    return int(recorded) if recorded is not None else (asked or DEV_SHARDS)


async def _dev(args: argparse.Namespace) -> int:
    # pgserver asks platformdirs for a runtime directory it does not use; its fallback
    # warning would only confuse a newcomer.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
    from services.common.dirlock import DirectoryInUse, DirectoryLock
    from services.common.ingress_auth import IngressConfigError
    from services.frontend.auth import AuthConfigError
    from services.frontend.exposure import UnsafeBind

    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = Path(args.data_dir) if args.data_dir else state_dir() / "dev"
    # First: a second `kadence dev` on this directory would take the first one's shards.
    try:
        lock = DirectoryLock.acquire(data, api=f"http://127.0.0.1:{args.port}")
    except DirectoryInUse as exc:
        print(f"kadence dev: {exc.directory} is in use by another kadence dev ({exc.holder}); stop that one"
              " or choose another --data-dir", file=sys.stderr)
        return 2
    try:
        return await _dev_locked(args, data, lock)
    except (UnsafeBind, AuthConfigError, IngressConfigError) as exc:
        print(f"kadence dev: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()


async def _dev_locked(args: argparse.Namespace, data: Path, lock: DirectoryLock) -> int:
    """``kadence dev`` once it owns ``data``."""
    from kadence.kafka_security import KafkaSecurity
    from services.cluster import Cluster
    from services.common import telemetry
    from services.common.config import Settings
    from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
    from services.frontend.auth import Authenticator
    from services.frontend.exposure import check_bind
    from services.frontend.tokens import KEYS_SETTING, TokenKeys, keys_in_file

    # Before anything starts (the frontend checks again when it binds).
    env = Settings.from_env()
    check_bind(env.frontend_host, auth_configured=bool(env.auth_config), insecure=env.insecure or args.insecure)
    if env.auth_config:
        Authenticator.from_file(Path(env.auth_config))  # AuthConfigError: said before anything starts
    # The data directory's key, so tokens handed out survive a restart (unless set).
    token_keys = os.environ.get(KEYS_SETTING) or keys_in_file(data / "task-token-keys")
    try:
        TokenKeys.parse(token_keys)
    except ValueError as exc:
        print(f"kadence dev: {exc}", file=sys.stderr)
        return 2
    for flag, port in (("--port", args.port), ("--kafka-port", args.kafka_port)):
        if port and not _port_free(port):
            print(f"kadence dev: port {port} on 127.0.0.1 is in use; choose another with {flag}", file=sys.stderr)
            return 2
    # Before the cluster starts: its producers, consumers and HTTP server check at start-up.
    signals = telemetry.setup_from_env("kadence-dev", traces=args.traces, metrics_port=args.metrics_port)
    pg = EmbeddedPostgres.start(data / "postgres")
    broker = None
    cluster = None
    try:
        shards = await _dev_shards(pg.dsn, args.shards, data)
        if shards is None:
            return 2
        broker = await EmbeddedBroker.start(args.kafka_port, log_path=data / "broker.log")
        settings = Settings.from_env(
            kafka_bootstrap=broker.bootstrap, database_url=pg.dsn, frontend_port=args.port,
            shards=shards, task_partitions=shards, session_timeout_ms=3000,
            task_token_keys=token_keys,
            # Its own broker speaks plain Kafka on loopback, whatever KADENCE_KAFKA_* says.
            kafka_security=KafkaSecurity(),
            insecure=True if args.insecure else None)
        cluster = Cluster(settings)
        await cluster.start()
        lock.describe(cluster.url)
        print(f"Kadence is running.\n"
              f"  Web UI:     {cluster.url}/ui/\n"
              f"  API:        {cluster.url}   (OpenAPI: {cluster.url}/openapi.json)\n"
              f"  Kafka:      {broker.bootstrap}   (topics kadence.requests, .history, .tasks, .replies, .dlq)\n"
              f"  PostgreSQL: {pg.dsn}\n"
              f"  Data:       {data}", flush=True)
        if signals.metrics_url:
            print(f"  Metrics:    {signals.metrics_url}", flush=True)
        if args.sample:
            from kadence.samples import hello

            await hello.main(cluster.url)
            return 0
        print("Press Ctrl-C to stop; workflows carry on from PostgreSQL at the next start.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        from services.common.runner import until_stopped

        reason = await until_stopped(stop, cluster.fatal)
        if reason is not None:
            # A loop died for good (see services/common/supervision.py): stop, and let the
            # caller (a supervisor, a shell loop) start a fresh process.
            print(f"kadence dev: stopping after a fatal error: {reason}", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        if cluster is not None:
            await cluster.stop()
        if broker is not None:
            broker.stop()
        pg.stop()
        signals.shutdown()


def version() -> str:
    """The installed distribution's version (pyproject.toml's, once installed)."""
    from importlib import metadata

    try:
        return metadata.version("kadence")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["workflow"]:  # a click group of its own (kadence/_cli/workflow.py)
        from kadence._cli.workflow import main as workflow_main

        return workflow_main(words[1:])
    if words[:1] == ["task-queue"]:  # kadence/_cli/task_queue.py
        from kadence._cli.task_queue import main as task_queue_main

        return task_queue_main(words[1:])
    if words[:1] in (["namespace"], ["schedule"]):  # click groups of their own (kadence/_admin_cli.py)
        from kadence._admin_cli import main as admin_main

        return admin_main(words)
    parser = argparse.ArgumentParser(prog="kadence", description="Kadence durable workflows")
    parser.add_argument("--version", action="version", version=f"kadence {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run broker, PostgreSQL, frontend, history and matching in one process")
    dev.add_argument("--port", type=int, default=7233, help="HTTP API port on 127.0.0.1 (default 7233)")
    dev.add_argument("--kafka-port", type=int, default=9092, help="Kafka-wire broker port (default 9092)")
    dev.add_argument("--shards", type=int, default=None,
                     help="history shards = kadence.requests partitions, fixed when the data directory is"
                          f" created (default: its recorded count, else {DEV_SHARDS})")
    dev.add_argument("--data-dir", help="where PostgreSQL keeps its data (default: ~/.local/state/kadence/dev)")
    dev.add_argument("--sample", action="store_true", help="run the hello-world sample against it, then stop")
    dev.add_argument("--traces", choices=["console", "otlp", "none"], default=None,
                     help="where spans go: printed, sent to OTEL_EXPORTER_OTLP_ENDPOINT, or nowhere"
                          " (default: OTEL_TRACES_EXPORTER, else otlp when an OTLP endpoint is set, else none)")
    dev.add_argument("--metrics-port", type=int, default=None,
                     help="serve Prometheus metrics on 127.0.0.1:PORT/metrics"
                          " (default: KADENCE_METRICS_PORT, else off)")
    dev.add_argument("--insecure", action="store_true",
                     help="allow KADENCE_FRONTEND_HOST beyond loopback without authentication")
    dev.add_argument("-v", "--verbose", action="store_true")
    from kadence._tools_cli import add_commands

    add_commands(sub)  # encode, dlq, audit
    sub.add_parser("workflow", help="list, count, describe, show, start, execute, signal, query, terminate"
                                    " workflows (kadence workflow --help)", add_help=False)
    sub.add_parser("namespace", help="create, describe, list, update namespaces (kadence namespace --help)",
                   add_help=False)
    sub.add_parser("schedule", help="create, describe, list, pause, unpause, trigger, delete schedules"
                                    " (kadence schedule --help)", add_help=False)
    sub.add_parser("task-queue", help="describe a task queue: pollers and backlog (kadence task-queue --help)",
                   add_help=False)
    args = parser.parse_args(argv)
    if hasattr(args, "run"):
        return int(args.run(args))
    if args.command == "dev":
        try:
            from kadence import _loop

            return _loop.run(_dev(args))
        except KeyboardInterrupt:
            return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
