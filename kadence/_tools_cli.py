"""The operator subcommands of ``kadence``: ``encode``, ``dlq`` and ``audit``.

Thin: each parses its arguments, calls the library (kadence.kafka, kadence.dlq,
services.audit) and prints. Exit codes: 0 success (for ``audit``: clean), 1 the audit
found divergences, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kadence import kafka
from kadence._converter import check_args
from kadence.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from kadence.exceptions import KadenceError, PayloadError

if TYPE_CHECKING:
    from services.audit import AuditReport

_BOOTSTRAP_HELP = "Kafka bootstrap servers (default: $KADENCE_KAFKA_BOOTSTRAP or 127.0.0.1:9092)"


def _bootstrap_default() -> str:
    return os.environ.get("KADENCE_KAFKA_BOOTSTRAP") or "127.0.0.1:9092"


def add_commands(sub: Any) -> None:
    """Register the subcommands on the ``kadence`` parser's subparsers."""
    _add_encode(sub)
    _add_dlq(sub)
    _add_audit(sub)


# ---- encode -------------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _json_array(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON array of positional arguments")
    try:
        return check_args(value, what="--input")  # Python's json reads NaN; payloads are strict JSON
    except PayloadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_encode(sub: Any) -> None:
    encode = sub.add_parser("encode", help="print a command record to produce to kadence.requests yourself")
    kinds = encode.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default="default")
    common.add_argument("--workflow-id", required=True)
    common.add_argument("--request-id", help="deduplicates retries (default: a new random id)")
    common.add_argument("--reply-to", help="publish the outcome on kadence.replies under this key")
    common.add_argument("--identity", default="")
    common.add_argument("--raw", action="store_true", help="write the record's bytes to stdout, not hex")
    start = argparse.ArgumentParser(add_help=False)
    start.add_argument("--workflow-type", required=True)
    start.add_argument("--task-queue", required=True)
    start.add_argument("--input", type=_json_array, default=[], help="JSON array of the workflow's arguments")
    start.add_argument("--execution-timeout-ms", type=int, default=0,
                       help="timeout of the whole execution, every run of a continue-as-new chain")
    start.add_argument("--run-timeout-ms", type=int, default=0, help="timeout of each run")
    start.add_argument("--id-reuse-policy", choices=[p.value for p in WorkflowIDReusePolicy],
                       help="when a closed run of the id exists (default AllowDuplicate)")
    start.add_argument("--memo", type=_json_object, help="JSON object kept with the run")
    signal = argparse.ArgumentParser(add_help=False)
    signal.add_argument("--signal-name", required=True)
    only_start = kinds.add_parser("start", parents=[common, start], help="StartWorkflowExecution")
    only_start.add_argument("--id-conflict-policy", choices=[p.value for p in WorkflowIDConflictPolicy],
                            help="when a run of the id is running (default Fail)")
    sig = kinds.add_parser("signal", parents=[common, signal], help="SignalWorkflowExecution")
    sig.add_argument("--input", type=_json_array, default=[], help="JSON array of the signal's arguments")
    sig.add_argument("--run-id")
    sws = kinds.add_parser("signal-with-start", parents=[common, start, signal],
                           help="SignalWithStartWorkflowExecution")
    sws.add_argument("--signal-input", type=_json_array, default=[], help="JSON array of the signal's arguments")
    cancel = kinds.add_parser("cancel", parents=[common], help="RequestCancelWorkflowExecution")
    cancel.add_argument("--run-id")
    cancel.add_argument("--reason", default="")
    upd = kinds.add_parser("update", parents=[common], help="UpdateWorkflowExecution (useful with --reply-to)")
    upd.add_argument("--update-name", required=True)
    upd.add_argument("--update-id", help="names the update: the same id never runs twice (default: a new uuid)")
    upd.add_argument("--input", type=_json_array, default=[], help="JSON array of the update's arguments")
    upd.add_argument("--run-id")
    upd.add_argument("--wait-for-stage", choices=["accepted", "completed"], default="completed")
    rst = kinds.add_parser("reset", parents=[common], help="ResetWorkflowExecution (the reply names the new run)")
    to = rst.add_mutually_exclusive_group(required=True)
    to.add_argument("--event-id", type=int, help="an event of the workflow task to reset to")
    to.add_argument("--reset-point", choices=["first", "last"], help="the first task, or the last completed one")
    rst.add_argument("--run-id")
    rst.add_argument("--reason", default="")
    rst.add_argument("--no-reapply-signals", dest="reapply_signals", action="store_false",
                     help="do not give the new run the signals received after the reset point")
    encode.set_defaults(run=_encode)


def _encode(args: argparse.Namespace) -> int:
    ids = {"request_id": args.request_id, "identity": args.identity, "reply_to": args.reply_to}
    if args.kind == "start":
        value = kafka.encode_start(args.namespace, args.workflow_id, args.workflow_type, args.task_queue,
                                   args.input, execution_timeout_ms=args.execution_timeout_ms,
                                   run_timeout_ms=args.run_timeout_ms, id_reuse_policy=args.id_reuse_policy,
                                   id_conflict_policy=args.id_conflict_policy, memo=args.memo, **ids)
    elif args.kind == "signal":
        value = kafka.encode_signal(args.namespace, args.workflow_id, args.signal_name, args.input,
                                    run_id=args.run_id, **ids)
    elif args.kind == "cancel":
        value = kafka.encode_cancel(args.namespace, args.workflow_id, run_id=args.run_id, reason=args.reason, **ids)
    elif args.kind == "reset":
        value = kafka.encode_reset(args.namespace, args.workflow_id,
                                   args.event_id if args.event_id is not None else args.reset_point,
                                   run_id=args.run_id, reason=args.reason, reapply_signals=args.reapply_signals,
                                   **ids)
    elif args.kind == "update":
        value = kafka.encode_update(args.namespace, args.workflow_id, args.update_name, args.input,
                                    update_id=args.update_id, run_id=args.run_id,
                                    wait_for_stage=args.wait_for_stage, **ids)
    else:
        value = kafka.encode_signal_with_start(
            args.namespace, args.workflow_id, args.workflow_type, args.task_queue, args.signal_name,
            args.signal_input, args.input, execution_timeout_ms=args.execution_timeout_ms,
            run_timeout_ms=args.run_timeout_ms, id_reuse_policy=args.id_reuse_policy, memo=args.memo, **ids)
    if args.raw:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    else:
        print(value.hex())
    # The key goes beside the record, so a shell script can pass it to its producer.
    print(f"key: {kafka.workflow_key(args.namespace, args.workflow_id).decode()}", file=sys.stderr)
    return 0


# ---- dlq ----------------------------------------------------------------------------------


def _add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list and re-drive dead letters (kadence.dlq)")
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="print the dead letters, oldest first")
    listing.add_argument("--bootstrap", default=_bootstrap_default(), help=_BOOTSTRAP_HELP)
    listing.add_argument("--limit", type=int, help="print at most this many")
    listing.add_argument("--since-offset", type=int, default=0, help="start at this kadence.dlq offset")
    redrive = actions.add_parser("redrive", help="produce dead letters' original bytes to their source topic")
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

    from kadence import dlq

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
    except (KadenceError, OSError) as exc:
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
    audit = sub.add_parser("audit", help="replay kadence.history and check it against PostgreSQL")
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

    from services.audit import AuditError, audit

    _quiet_clients()
    bar = _Bar(not args.no_progress)
    started = datetime.now(UTC)
    try:
        report = asyncio.run(audit(args.bootstrap, args.dsn, from_time_ms=args.from_time,
                                   rebuild_into=args.rebuild_into, progress=bar))
    except (AuditError, KadenceError, OSError) as exc:
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
    """Store the verification in the system of record (services/audit/status.py); a failure
    to store is said, and does not change the audit's exit code."""
    import getpass

    import asyncpg

    from services.audit import status

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
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"kadence audit: not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)
