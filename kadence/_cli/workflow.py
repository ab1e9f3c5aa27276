"""``kadence workflow ...``: find, inspect and drive workflows from the terminal.

Built on click (subcommands, options with environment defaults) and rich (tables, the
history timeline). Every command talks to a frontend through the SDK's :class:`Client`
over HTTP, never to Kafka or PostgreSQL.

The options, the exit codes and the error mapping are those of every ``kadence`` click
CLI (kadence/_cli/common.py): 0 success; 1 the workflow failed, timed out, was terminated,
already runs, refused the query, or was still running when ``--timeout`` passed; 2 a usage
error or a query the server refused as malformed; 3 not found; 4 no answer (the frontend is
unreachable, answered 503, timed out with 504, as when no worker answers a query, or throttled
the namespace with 429).
"""

from __future__ import annotations

import functools
import json
import textwrap
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
from rich.table import Table
from rich.text import Text

from kadence._cli import batch, common, stack_trace
from kadence._cli.common import DEFAULT_ADDRESS, ExitCode, Failed, Output
from kadence._client import Client
from kadence._visibility import WorkflowExecution
from kadence.common import Backoff

__all__ = ["DEFAULT_ADDRESS", "ExitCode", "Failed", "Output", "main", "workflow"]
T = TypeVar("T")


# ---- shared options and plumbing (kadence/_cli/common.py) ---------------------------------------

_console = common.console
_print_json = common.print_json
# On each command without defaults, so that they may be written after it as well as before
# it, on the group (kadence/_cli/common.py, as `kadence namespace` and `kadence schedule`).
_connection_options = common.connection_options(group=False)
_output_option = common.output_option(group=False)


def _run(address: str, namespace: str, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client; the SDK's errors end the command with their exit code."""
    return common.run(common.Connection(address, namespace, common.connection().api_key), work)


def _done(output: str, operation: str, workflow_id: str, run_id: str | None, text: str) -> None:
    """What an operation on one run prints once done: ``text``, or with ``-o json`` an object a
    script can parse (the batch form prints its summary the same way)."""
    if output == Output.JSON:
        _print_json({"operation": operation, "workflow_id": workflow_id, "run_id": run_id})
    else:
        _console().print(text)


def _fail(code: ExitCode, message: str) -> NoReturn:
    raise Failed(code, message)


def _json_args(values: Iterable[str], option: str) -> list[Any]:
    out = []
    for value in values:
        try:
            out.append(json.loads(value))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"{value!r} is not JSON ({exc.msg}); quote strings: '\"text\"'",
                                     param_hint=option) from None
    return out


def _time(value: datetime | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        if value <= 0:
            return ""
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


STATUS_STYLES = {"Running": "cyan", "Completed": "green", "Failed": "red", "TimedOut": "red",
                 "Terminated": "yellow", "ContinuedAsNew": "blue", "Canceled": "yellow"}


def _status(status: str) -> Text:
    return Text(common.visible(status), style=STATUS_STYLES.get(status, ""))


def _failure_text(failure: object) -> Text | None:
    """``Type: message`` of a run's failure (its chain of causes: ``-o json``, ``details``)."""
    if not isinstance(failure, Mapping):
        return None
    kind = f"{failure['type']}: " if failure.get("type") else ""
    return Text(common.visible(f"{kind}{failure.get('message') or ''}"), style="red")


def with_client(command: Callable[..., Any]) -> Callable[..., Any]:
    """The connection options of a command that talks to the frontend. The command is given
    the values in effect (:func:`common.connection`, :func:`common.output`: written after it,
    else before it on the group, else the environment and the defaults), not only those
    written after it."""

    @functools.wraps(command)
    def call(**kwargs: Any) -> Any:
        given = common.connection()
        kwargs.update(address=given.address, namespace=given.namespace, api_key=given.api_key)
        if "output" in kwargs:
            kwargs["output"] = common.output().value
        return command(**kwargs)

    return _connection_options(call)


# ---- the group ----------------------------------------------------------------------------------

EPILOG = f"""\b
Environment: KADENCE_ADDRESS (default http://127.0.0.1:7233), KADENCE_NAMESPACE (default default),
KADENCE_API_KEY, KADENCE_OUTPUT (table or json).
Exit codes: 0 ok; 1 the workflow failed, timed out or was terminated, the request was refused
(or the run still ran when --timeout passed); 2 usage errors, malformed queries; 3 not found;
{textwrap.fill(common.NO_ANSWER_HELP, 96)}
"""


@click.group(name="workflow", epilog=EPILOG, context_settings=common.CONTEXT_SETTINGS)
@common.global_options(group=True)
def workflow() -> None:
    """Find, inspect and drive workflows.

    \b
    Find them with the list filter language:
      kadence workflow list -q "WorkflowType = 'Order' AND ExecutionStatus = 'Failed'"
      kadence workflow count -q "StartTime > '2026-12-01T00:00:00Z' GROUP BY ExecutionStatus"
    Look inside one:
      kadence workflow describe -w order-42
      kadence workflow show -w order-42
    """


def _pairs(values: Mapping[str, Any] | None) -> str:
    """``name=value, ...`` (values as JSON), sorted by name: search attributes and memos in a cell."""
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted((values or {}).items()))


QUERY_HELP = ("A list filter, e.g. \"WorkflowType = 'Order' AND ExecutionStatus = 'Running' ORDER BY StartTime"
              " DESC\" (README, 'Finding workflows'). Empty: every run.")


@workflow.command(name="list", short_help="List runs matching a query, newest first.")
@click.option("--query", "-q", default="", help=QUERY_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many runs.")
@click.option("--all", "everything", is_flag=True, help="Every matching run, however many (ignores --limit).")
@_output_option
@with_client
def list_(query: str, limit: int, everything: bool, output: str,
          address: str, namespace: str, api_key: str | None) -> None:
    """List workflow runs matching a query, newest first. When more match than --limit, a
    line on stderr says so (the output itself stays a table, or a JSON list)."""
    async def work(client: Client) -> list[WorkflowExecution]:
        # One more than shown: whether more runs exist, without counting them all.
        return [e async for e in client.list_workflows(query, page_size=min(limit + 1, 1000) if not everything
                                                        else 1000, limit=None if everything else limit + 1)]

    runs = _run(address, namespace, work)
    if not everything and len(runs) > limit:
        runs = runs[:limit]
        click.echo(f"More runs match than the {limit} shown: raise --limit, give --all, or narrow --query"
                   " (kadence workflow count -q ... says how many).", err=True)
    if output == Output.JSON:
        _print_json([dict(e.raw) for e in runs])
        return
    table = Table(box=None, header_style="bold")
    with_attributes = any(e.search_attributes for e in runs)
    with_memo = any(e.memo for e in runs)
    for column in ("Workflow ID", "Run ID", "Type", "Status", "Start", "Close", "Task queue",
                   *(["Search attributes"] if with_attributes else []), *(["Memo"] if with_memo else [])):
        table.add_column(column, overflow="fold")
    for e in runs:
        attributes = _pairs(e.raw.get("search_attributes"))  # as the API answered them: JSON
        table.add_row(e.workflow_id, e.run_id, e.workflow_type or "", _status(e.status), _time(e.start_time),
                      _time(e.close_time), e.task_queue or "", *([attributes] if with_attributes else []),
                      *([_pairs(e.memo)] if with_memo else []))
    console = _console()
    console.print(table)
    if not runs:
        console.print("No workflows match.", style="dim")


@workflow.command(short_help="Count runs matching a query, or per status.")
@click.option("--query", "-q", default="", help=QUERY_HELP + " Ends with GROUP BY ExecutionStatus to count per status.")
@_output_option
@with_client
def count(query: str, output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Count workflow runs matching a query (per status with GROUP BY ExecutionStatus)."""
    result = _run(address, namespace, lambda client: client.count_workflows(query))
    if output == Output.JSON:
        _print_json({"count": result.count,
                     **({"groups": [{"group_values": v, "count": n} for v, n in result.groups]} if result.groups
                        else {})})
        return
    console = _console()
    if not result.groups:
        console.print(str(result.count))
        return
    table = Table(box=None, header_style="bold")
    table.add_column("Status")
    table.add_column("Count", justify="right")
    for values, n in result.groups:
        table.add_row(_status(values[0] if values else ""), str(n))
    table.add_row(Text("Total", style="bold"), Text(str(result.count), style="bold"))
    console.print(table)


WORKFLOW_ID = click.option("--workflow-id", "-w", required=True, help="The workflow's id.")
RUN_ID = click.option("--run-id", "-r", default=None, help="One run of it (default: the latest).")


@workflow.command(short_help="Status, pending activities, timers and stack trace of a run.")
@WORKFLOW_ID
@RUN_ID
@click.option("--stack-trace/--no-stack-trace", "with_stack", default=None,
              help="Ask the worker where the run's coroutines wait (the __stack_trace query). Default: for a"
                   " running run in a table, not in JSON.")
@_output_option
@with_client
def describe(workflow_id: str, run_id: str | None, with_stack: bool | None, output: str,
             address: str, namespace: str, api_key: str | None) -> None:
    """Show a run's status, pending activities (attempts, last failure), pending timers and,
    for a running run, its stack trace: where each coroutine waits, file and line."""
    async def work(c: Client) -> tuple[dict[str, Any], stack_trace.StackTrace | None]:
        found = await c.get_workflow_handle(workflow_id, run_id=run_id).describe()
        ask = with_stack if with_stack is not None else (output != Output.JSON and found.get("status") == "Running")
        trace = await stack_trace.ask(c, workflow_id, str(found.get("run_id") or run_id or ""),
                                      str(found.get("task_queue") or "")) if ask else None
        return found, trace

    info, trace = _run(address, namespace, work)
    if output == Output.JSON:
        _print_json({**info, **(trace.to_json() if trace is not None else {})})
        return
    console = _console()
    summary = Table(box=None, show_header=False)
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    for label, value in (("Workflow ID", info.get("workflow_id")), ("Run ID", info.get("run_id")),
                         ("Type", info.get("workflow_type")), ("Task queue", info.get("task_queue")),
                         ("Status", _status(str(info.get("status")))), ("Start", _time(info.get("start_time"))),
                         ("Close", _time(info.get("close_time"))), ("History length", info.get("history_length")),
                         ("Continued as" if info.get("status") == "ContinuedAsNew" else "Reset to",
                          info.get("new_run_id")),
                         ("Reset from", info.get("reset_from_run_id")),
                         ("Terminated because", info.get("terminate_reason")),
                         ("Failure", _failure_text(info.get("failure"))),
                         ("Cancel details", info.get("cancel_details")),
                         ("Runs reset from it", ", ".join(info.get("reset_to_run_ids") or [])),
                         ("Memo", _pairs(info.get("memo")) if isinstance(info.get("memo"), dict) else None)):
        if value not in (None, ""):
            summary.add_row(label, value if isinstance(value, Text) else str(value))
    console.print(summary)
    task = info.get("workflow_task")
    if isinstance(task, dict) and int(task.get("attempt") or 1) > 1:
        # A workflow task that keeps failing: history retries it without growing its events.
        failure = task.get("last_failure") or {}
        table = Table(title="Workflow task failing", title_justify="left", header_style="bold")
        for column in ("Attempt", "State", "Last failure"):
            table.add_column(column, overflow="fold")
        table.add_row(str(task.get("attempt")), str(task.get("state", "")),
                      Text(common.visible(f"{failure.get('type') or ''}: {failure.get('message') or ''}"), style="red"))
        console.print(table)
    activities = info.get("pending_activities") or []
    if activities:
        table = Table(title="Pending activities", title_justify="left", header_style="bold")
        for column in ("Activity ID", "Type", "State", "Attempt", "Scheduled", "Last failure"):
            table.add_column(column, overflow="fold")
        for a in activities:
            failure = a.get("last_failure") or {}
            table.add_row(str(a.get("activity_id", "")), str(a.get("activity_type", "")), str(a.get("state", "")),
                          str(a.get("attempt", "")), _time(a.get("scheduled_time")),
                          Text(common.visible(str(failure.get("message") or "")), style="red"))
        console.print(table)
    timers = info.get("pending_timers") or []
    if timers:
        table = Table(title="Pending timers", title_justify="left", header_style="bold")
        table.add_column("Timer ID")
        table.add_column("Fires at")
        for t in timers:
            table.add_row(str(t.get("timer_id", "")), _time(t.get("fire_at")))
        console.print(table)
    if trace is not None:
        stack_trace.print_section(console, trace)


# The few attributes worth a column in the timeline, per event type (the rest: --output json).
_DETAIL_KEYS = ("workflow_type", "task_queue", "activity_type", "activity_id", "timer_id", "signal_name",
                "marker_name", "attempt", "input", "result", "details", "search_attributes", "reason", "cause",
                "timeout_type", "new_run_id")


def _details(event: Mapping[str, Any]) -> Text:
    attributes = event.get("attributes") or {}
    parts = []
    for key in _DETAIL_KEYS:
        value = attributes.get(key)
        if value in (None, "", 0) or (key == "attempt" and value == 1):
            continue
        shown = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}={shown if len(shown) <= 80 else shown[:77] + '...'}")
    if attributes.get("start_to_fire_timeout_ms"):
        parts.append(f"fires after {timedelta(milliseconds=attributes['start_to_fire_timeout_ms'])}")
    failure = attributes.get("failure")
    text = Text(common.visible(", ".join(parts)))
    if isinstance(failure, Mapping):
        kind = f"{failure['type']}: " if failure.get("type") else ""  # which error, as the API says it
        text.append(("; " if parts else "") + f"failure: {kind}{failure.get('message', '')}", style="red")
    if attributes.get("retry_backoff_ms"):
        text.append(f" (retry in {attributes['retry_backoff_ms']} ms)", style="dim")
    return text


def _event_style(kind: str) -> str:
    if kind.endswith(("Failed", "TimedOut", "Terminated")):
        return "red"
    if kind.endswith("Completed") or kind == "TimerFired":
        return "green"
    if kind.startswith("WorkflowExecution"):
        return "bold"
    return ""


@workflow.command(short_help="A run's history as a timeline (or JSON).")
@WORKFLOW_ID
@RUN_ID
@_output_option
@with_client
def show(workflow_id: str, run_id: str | None, output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Show a run's history as a timeline (--output json: the events as handle.history() gives them)."""
    events = _run(address, namespace, lambda c: c.get_workflow_handle(workflow_id, run_id=run_id).history())
    if output == Output.JSON:
        _print_json(events)
        return
    table = Table(box=None, header_style="bold")
    table.add_column("ID", justify="right")
    table.add_column("Time")
    table.add_column("+", justify="right", style="dim")
    table.add_column("Event")
    table.add_column("Details", overflow="fold")
    first = int(events[0]["event_time"]) if events else 0
    for event in events:
        kind = str(event.get("event_type"))
        elapsed = (int(event["event_time"]) - first) / 1000
        table.add_row(str(event.get("event_id")), _time(int(event["event_time"])), f"{elapsed:.3f}s",
                      Text(common.visible(kind), style=_event_style(kind)), _details(event))
    _console().print(table)


def _start_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--type", "-t", "workflow_type", required=True, help="The workflow type (its registered name)."),
        click.option("--task-queue", "--tq", required=True, help="The task queue its workers poll."),
        WORKFLOW_ID,
        click.option("--input", "-i", "inputs", multiple=True, metavar="JSON",
                     help="One argument as JSON; repeat for several (e.g. -i '\"text\"' -i 42)."),
        click.option("--execution-timeout", type=click.FloatRange(min=0), default=None,
                     help="Seconds the whole run may take (default: no limit)."),
        click.option("--search-attribute", "-a", "attributes", multiple=True, metavar="NAME=VALUE",
                     help="A custom search attribute registered in the namespace; VALUE is JSON, or else"
                          " taken as a string (e.g. -a CustomerId=c-42 -a Priority=3). Repeatable."),
    ]):
        command = option(command)
    return command


@workflow.command(short_help="Start a workflow; print its run id.")
@_start_options
@click.option("--cron-schedule", default=None, metavar="CRON",
              help="Start nothing now: run it at each time of this cron expression (UTC), as the schedule"
                   " cron-WORKFLOW_ID (stop it with kadence schedule delete cron-WORKFLOW_ID).")
@_output_option
@with_client
def start(workflow_type: str, task_queue: str, workflow_id: str, inputs: tuple[str, ...],
          execution_timeout: float | None, attributes: tuple[str, ...], cron_schedule: str | None, output: str,
          address: str, namespace: str, api_key: str | None) -> None:
    """Start a workflow and print its run id (does not wait)."""
    args = _json_args(inputs, "--input")
    timeout = None if execution_timeout is None else timedelta(seconds=execution_timeout)
    found = common.name_values(attributes, "--search-attribute")
    handle = _run(address, namespace, lambda c: c.start_workflow(workflow_type, *args, id=workflow_id,
                                                                 task_queue=task_queue, execution_timeout=timeout,
                                                                 search_attributes=found,
                                                                 cron_schedule=cron_schedule))
    if output == Output.JSON:
        _print_json({"workflow_id": handle.workflow_id, "run_id": handle.run_id,
                     **({"schedule_id": f"cron-{workflow_id}"} if cron_schedule else {})})
    elif cron_schedule:
        _console().print(Text.assemble("Scheduled ", (common.visible(handle.workflow_id), "bold"),
                                       common.visible(f" on {cron_schedule!r} (schedule cron-{workflow_id})")))
    else:
        _console().print(Text.assemble("Started ", (common.visible(handle.workflow_id), "bold"),
                                       f" run {common.visible(handle.run_id or '')}"))


@workflow.command(short_help="Start a workflow and wait for its result.")
@_start_options
@_output_option
@with_client
def execute(workflow_type: str, task_queue: str, workflow_id: str, inputs: tuple[str, ...],
            execution_timeout: float | None, attributes: tuple[str, ...], output: str, address: str,
            namespace: str, api_key: str | None) -> None:
    """Start a workflow, wait for it and print its result as JSON (exit 1 if it fails)."""
    args = _json_args(inputs, "--input")
    timeout = None if execution_timeout is None else timedelta(seconds=execution_timeout)
    found = common.name_values(attributes, "--search-attribute")
    result = _run(address, namespace, lambda c: c.execute_workflow(workflow_type, *args, id=workflow_id,
                                                                   task_queue=task_queue, execution_timeout=timeout,
                                                                   search_attributes=found))
    _print_json(result)


@workflow.command(short_help="Wait for a run to close; print its result.")
@WORKFLOW_ID
@RUN_ID
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait at most (default: until it closes); exit 1 if it still runs.")
@_output_option
@with_client
def result(workflow_id: str, run_id: str | None, timeout: float | None, output: str,
           address: str, namespace: str, api_key: str | None) -> None:
    """Wait for a run to close and print its result as JSON (exit 1 if it failed)."""

    async def wait(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        # Asked once first (not through the client's retries), so that a frontend nobody runs
        # (exit 4) or a workflow that does not exist (exit 3) ends the command at once; the
        # SDK's wait itself rides out a frontend that goes away while it waits.
        retry, client.retry = client.retry, Backoff(attempts=1)
        try:
            await handle.describe()
        finally:
            client.retry = retry
        return await handle.result(timeout=timeout)

    _print_json(_run(address, namespace, wait))


@workflow.command(short_help="Send a signal to a workflow (or every run a query matches).",
                  epilog=batch.BATCH_EPILOG)
@batch.target_options
@click.option("--name", required=True, help="The signal's name.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="JSON", help="One argument as JSON; repeatable.")
@_output_option
@with_client
def signal(workflow_id: str | None, run_id: str | None, query: str | None, yes: bool, name: str,
           inputs: tuple[str, ...], output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Send a signal to a workflow. With --query, to every run the filter matches."""
    batch.check_target(workflow_id, run_id, query)
    args = _json_args(inputs, "--input")
    if query is not None:
        batch.batch(address, namespace, batch.Verb.SIGNAL, query, lambda h: h.signal(name, *args),
                         yes=yes, output=output)
        return
    assert workflow_id is not None
    _run(address, namespace, lambda c: c.get_workflow_handle(workflow_id, run_id=run_id).signal(name, *args))
    _done(output, "signal", workflow_id, run_id, f"Signal {name} sent to {workflow_id}")


@workflow.command(short_help="Ask a workflow a query through its worker.")
@WORKFLOW_ID
@RUN_ID
@click.option("--name", required=True, help="The query's name.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="JSON", help="One argument as JSON; repeatable.")
@click.option("--timeout", type=click.FloatRange(0, 600), default=None, metavar="SECONDS",
              help="How long the server waits for a worker's answer (default 10 s; exit 4 past it).")
@_output_option
@with_client
def query(workflow_id: str, run_id: str | None, name: str, inputs: tuple[str, ...], timeout: float | None,
          output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Ask a workflow a query (answered by a worker) and print the answer as JSON."""
    args = _json_args(inputs, "--input")
    _print_json(_run(address, namespace,
                     lambda c: c.get_workflow_handle(workflow_id, run_id=run_id).query(name, *args, timeout=timeout)))


@workflow.command(short_help="Terminate a running workflow (or every run a query matches).",
                  epilog=batch.BATCH_EPILOG)
@batch.target_options
@click.option("--reason", default="", help="Recorded in the run's history.")
@_output_option
@with_client
def terminate(workflow_id: str | None, run_id: str | None, query: str | None, yes: bool, reason: str, output: str,
              address: str, namespace: str, api_key: str | None) -> None:
    """Terminate a running workflow at once (no cleanup runs). With --query, every run the
    filter matches."""
    batch.check_target(workflow_id, run_id, query)
    if query is not None:
        batch.batch(address, namespace, batch.Verb.TERMINATE, query, lambda h: h.terminate(reason),
                         yes=yes, output=output)
        return
    assert workflow_id is not None
    _run(address, namespace, lambda c: c.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason))
    _done(output, "terminate", workflow_id, run_id, f"Terminated {workflow_id}")


def main(argv: list[str]) -> int:
    """Run ``kadence workflow`` with ``argv`` (the words after ``workflow``); return the exit code."""
    return common.main(workflow, argv, "kadence workflow")
