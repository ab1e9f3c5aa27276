"""The client-side tool subcommand of ``kadence``: ``encode`` prints a command record to
produce to kadence.requests yourself (the server's tools, ``dlq`` and ``audit``, are in
services/cli.py).

Thin: it parses its arguments, calls kadence.kafka and prints. Exit codes: 0 success,
2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from kadence import kafka
from kadence._converter import check_args
from kadence.exceptions import PayloadError
from kadence_protocol.policies import WorkflowIDConflictPolicy, WorkflowIDReusePolicy


def add_commands(sub: Any) -> None:
    """Register the subcommands on the ``kadence`` parser's subparsers."""
    _add_encode(sub)


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


def _policy(kind: type[StrEnum]) -> Callable[[str], str]:
    """An id policy by its wire name (``RejectDuplicate``) or its member name in the SDK
    (``REJECT_DUPLICATE``, as README's "Start policies" writes them), any case."""
    names = {p.value.lower(): p.value for p in kind} | {p.name.lower(): p.value for p in kind}

    def parse(text: str) -> str:
        try:
            return names[text.strip().lower()]
        except KeyError:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(p.value for p in kind)}"
                                             " (or their names in the SDK, such as "
                                             f"{next(iter(kind)).name})") from None

    return parse


def _add_encode(sub: Any) -> None:
    encode = sub.add_parser("encode", help="print a command record to produce to kadence.requests yourself",
                            description="Print an Avro command record (hex, or its bytes with --raw) to produce to"
                                        " kadence.requests yourself; its key (namespace/workflow_id) goes to stderr."
                                        " Produce it with Kafka's default (murmur2) partitioner, e.g. kcat -X"
                                        " partitioner=murmur2_random (README, 'Start and signal workflows from"
                                        " Kafka').")
    kinds = encode.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default="default", help="the workflow's namespace (default: default)")
    common.add_argument("--workflow-id", required=True, help="the workflow's id (with the namespace, the record's key)")
    common.add_argument("--request-id", help="deduplicates retries (default: a new random id)")
    common.add_argument("--reply-to", help="publish the outcome on kadence.replies under this key")
    common.add_argument("--identity", default="", help="who sends it, recorded in history")
    common.add_argument("--raw", action="store_true", help="write the record's bytes to stdout, not hex")
    start = argparse.ArgumentParser(add_help=False)
    start.add_argument("--workflow-type", required=True, help="the workflow type (its registered name)")
    start.add_argument("--task-queue", required=True, help="the task queue its workers poll")
    start.add_argument("--input", type=_json_array, default=[], help="JSON array of the workflow's arguments")
    start.add_argument("--execution-timeout-ms", type=int, default=0,
                       help="timeout of the whole execution, every run of a continue-as-new chain")
    start.add_argument("--run-timeout-ms", type=int, default=0, help="timeout of each run")
    start.add_argument("--id-reuse-policy", type=_policy(WorkflowIDReusePolicy),
                       metavar="{" + ",".join(p.value for p in WorkflowIDReusePolicy) + "}",
                       help="when a closed run of the id exists (default AllowDuplicate; REJECT_DUPLICATE and the"
                            " SDK's other names too)")
    start.add_argument("--memo", type=_json_object, help="JSON object kept with the run")
    signal = argparse.ArgumentParser(add_help=False)
    signal.add_argument("--signal-name", required=True, help="the signal's name")
    only_start = kinds.add_parser("start", parents=[common, start], help="StartWorkflowExecution")
    only_start.add_argument("--id-conflict-policy", type=_policy(WorkflowIDConflictPolicy),
                            metavar="{" + ",".join(p.value for p in WorkflowIDConflictPolicy) + "}",
                            help="when a run of the id is running (default Fail; USE_EXISTING and the SDK's other"
                                 " names too)")
    sig = kinds.add_parser("signal", parents=[common, signal], help="SignalWorkflowExecution")
    sig.add_argument("--input", type=_json_array, default=[], help="JSON array of the signal's arguments")
    sig.add_argument("--run-id", help="one run of the workflow (default: the current one)")
    sws = kinds.add_parser("signal-with-start", parents=[common, start, signal],
                           help="SignalWithStartWorkflowExecution")
    sws.add_argument("--signal-input", type=_json_array, default=[], help="JSON array of the signal's arguments")
    cancel = kinds.add_parser("cancel", parents=[common], help="RequestCancelWorkflowExecution")
    cancel.add_argument("--run-id", help="one run of the workflow (default: the current one)")
    cancel.add_argument("--reason", default="", help="recorded with the request in history")
    upd = kinds.add_parser("update", parents=[common], help="UpdateWorkflowExecution (useful with --reply-to)")
    upd.add_argument("--update-name", required=True, help="the update handler's name")
    upd.add_argument("--update-id", help="names the update: the same id never runs twice (default: a new uuid)")
    upd.add_argument("--input", type=_json_array, default=[], help="JSON array of the update's arguments")
    upd.add_argument("--run-id", help="one run of the workflow (default: the current one)")
    upd.add_argument("--wait-for-stage", choices=["accepted", "completed"], default="completed",
                     help="when the reply is sent: once accepted, or once completed (default)")
    rst = kinds.add_parser("reset", parents=[common], help="ResetWorkflowExecution (the reply names the new run)")
    to = rst.add_mutually_exclusive_group(required=True)
    to.add_argument("--event-id", type=int, help="an event of the workflow task to reset to")
    to.add_argument("--reset-point", choices=["first", "last"], help="the first task, or the last completed one")
    rst.add_argument("--run-id", help="the run to reset (default: the current one)")
    rst.add_argument("--reason", default="", help="recorded in both runs' histories")
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
