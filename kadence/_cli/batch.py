"""Batches of ``kadence workflow cancel | terminate | signal``: the operation on every run a
list query matches (``--query``), after a confirmation prompt (``--yes`` skips it), with
a progress bar (stderr) and a summary (stdout; ``--output json`` for scripts), ending
with an exit code scripts can rely on: 0 all done (or none matched), 5 some failed, 6 the
prompt was declined (:class:`BatchExit`; the workflow CLI's own codes are kept as they are,
the ones above 4 belong to batches).

The workflow CLI's plumbing (kadence/_cli/workflow.py, which uses this module's options)
is imported when a batch runs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kadence._client import Client, WorkflowHandle
from kadence.exceptions import RPCError, WorkflowAlreadyClosedError

BATCH_EPILOG = """\b
With --query (a batch): the runs the filter matches are listed, you confirm (or pass
--yes), a progress bar runs on stderr and a summary is printed (--output json for
scripts). Exit codes: 0 every operation succeeded (or nothing matched); 5 some
operations failed (the summary lists them); 6 the prompt was declined or had no
answer: nothing was done; otherwise those of every command (a malformed query: 2).
"""

# Operations of a batch in flight at once: enough to go fast, few enough not to flood a frontend.
BATCH_CONCURRENCY = 16
SHOWN_FAILURES = 20  # failures listed one by one in the table summary (all of them in JSON)


class BatchExit(enum.IntEnum):
    """The exit codes a batch adds to the CLI's (which end at 4)."""

    PARTIAL = 5  # some operations failed; the summary lists them
    DECLINED = 6  # the confirmation prompt was declined (or had no answer): nothing was done


class Verb(enum.StrEnum):
    CANCEL = "cancel"
    TERMINATE = "terminate"
    SIGNAL = "signal"


@dataclass(frozen=True)
class Target:
    workflow_id: str
    run_id: str | None


@dataclass
class BatchOutcome:
    """What a batch did: the runs matched, and per run, done or the error."""

    verb: Verb
    query: str
    matched: int = 0
    succeeded: list[Target] = field(default_factory=list)
    failed: list[tuple[Target, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"operation": self.verb.value, "query": self.query, "matched": self.matched,
                "succeeded": len(self.succeeded),
                "failed": [{"workflow_id": t.workflow_id, "run_id": t.run_id, "error": e} for t, e in self.failed]}


Operation = Callable[[WorkflowHandle], Awaitable[Any]]


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """-w (one workflow) or -q (every run the query matches, after a prompt unless --yes)."""
    for option in reversed([
        click.option("--workflow-id", "-w", default=None, help="The workflow's id (or --query for a batch)."),
        click.option("--run-id", "-r", default=None, help="One run of it (default: the latest)."),
        click.option("--query", "-q", default=None,
                     help="A batch: every run this list filter matches, e.g. \"WorkflowType = 'Order' AND"
                          " ExecutionStatus = 'Running'\" (README, 'Finding workflows')."),
        click.option("--yes", "-y", is_flag=True, help="With --query: do not ask for confirmation."),
    ]):
        command = option(command)
    return command


def check_target(workflow_id: str | None, run_id: str | None, query: str | None) -> None:
    if (workflow_id is None) == (query is None):
        raise click.UsageError("give either --workflow-id (one workflow) or --query (a batch)")
    if query is not None and run_id is not None:
        raise click.UsageError("--run-id names a run of one workflow: not with --query")
    if query is not None and not query.strip():
        raise click.UsageError("--query must not be empty: a batch over every workflow must say so"
                               " (e.g. \"ExecutionStatus = 'Running'\")")


def single(address: str, namespace: str, workflow_id: str, run_id: str | None, operation: Operation) -> Any:
    """Run ``operation`` on one workflow; a run that closed first (409 WorkflowAlreadyClosed: an
    update) ends with exit code 1."""
    from kadence._cli.workflow import ExitCode, Failed, _run  # that module imports this one

    async def work(client: Client) -> Any:
        try:
            return await operation(client.get_workflow_handle(workflow_id, run_id=run_id))
        except WorkflowAlreadyClosedError as exc:
            raise Failed(ExitCode.WORKFLOW, exc.message or str(exc)) from None

    return _run(address, namespace, work)


def batch(address: str, namespace: str, verb: Verb, query: str, operation: Operation, *, yes: bool,
          output: str) -> None:
    """Run ``operation`` on every run ``query`` matches (see the module doc) and end with the
    batch's exit code: 0 all done (or none matched), 5 some failed, 6 not confirmed."""
    from kadence._cli.workflow import _run  # that module imports this one

    outcome = BatchOutcome(verb, query)

    async def work(client: Client) -> bool:
        """Whether the batch ran (False: not confirmed)."""
        targets = [Target(e.workflow_id, e.run_id) async for e in client.list_workflows(query, page_size=1000)]
        outcome.matched = len(targets)
        if not targets:
            return True
        if not yes:
            try:
                confirmed = click.confirm(f"{verb.value.capitalize()} {len(targets)} workflow run(s) matching"
                                          f" {query!r}?", default=False, err=True)
            except click.Abort:  # no answer (stdin closed): not confirmed
                confirmed = False
            if not confirmed:
                return False
        await _apply(client, targets, operation, outcome)
        return True

    if not _run(address, namespace, work):
        click.echo(click.style("Error: ", fg="red", bold=True)
                   + f"not confirmed: nothing was {_done(verb)} (--yes skips the prompt)", err=True)
        raise SystemExit(int(BatchExit.DECLINED))
    _summary(outcome, output)
    if outcome.failed:
        raise SystemExit(int(BatchExit.PARTIAL))


def _done(verb: Verb) -> str:
    return {Verb.CANCEL: "canceled", Verb.TERMINATE: "terminated", Verb.SIGNAL: "signalled"}[verb]


async def _apply(client: Client, targets: list[Target], operation: Operation, outcome: BatchOutcome) -> None:
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)
    # On stderr: stdout keeps the summary alone (JSON for scripts).
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)

    async def one(target: Target, task: Any) -> None:
        async with gate:
            try:
                await operation(client.get_workflow_handle(target.workflow_id, run_id=target.run_id))
            except RPCError as exc:
                if exc.status == 0 or exc.status >= 500:
                    raise  # the frontend is gone or failing: not one run's problem, the batch stops
                outcome.failed.append((target, f"{exc.error_type}: {exc.message}"))
            else:
                outcome.succeeded.append(target)
            progress.advance(task)

    with progress:
        task = progress.add_task(f"{outcome.verb.value.capitalize()}", total=len(targets))
        await asyncio.gather(*(one(t, task) for t in targets))


def _summary(outcome: BatchOutcome, output: str) -> None:
    from kadence._cli.workflow import Output, _console, _print_json  # that module imports this one

    if output == Output.JSON:
        _print_json(outcome.as_json())
        return
    console = _console()
    if not outcome.matched:
        console.print("No workflows match.", style="dim")
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("Matched", str(outcome.matched))
    table.add_row(_done(outcome.verb).capitalize(), Text(str(len(outcome.succeeded)), style="green"))
    table.add_row("Failed", Text(str(len(outcome.failed)), style="red") if outcome.failed else "0")
    console.print(table)
    if outcome.failed:
        failures = Table(title="Failures", title_justify="left", header_style="bold")
        for column in ("Workflow ID", "Run ID", "Error"):
            failures.add_column(column, overflow="fold")
        for target, error in outcome.failed[:SHOWN_FAILURES]:
            failures.add_row(target.workflow_id, target.run_id or "", error)
        console.print(failures)
        if len(outcome.failed) > SHOWN_FAILURES:
            console.print(f"... and {len(outcome.failed) - SHOWN_FAILURES} more (--output json lists all)",
                          style="dim")
