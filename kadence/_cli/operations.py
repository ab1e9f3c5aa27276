"""``kadence workflow cancel | update | reset``: they register on the ``workflow`` group of
kadence/_cli/workflow.py (kadence/_cli/__init__.py imports this module) and share its
plumbing; ``cancel`` also runs as a batch (kadence/_cli/batch.py).
"""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from kadence._cli.batch import BATCH_EPILOG, Verb, batch, check_target, single, target_options
from kadence._cli.common import visible
from kadence._cli.workflow import (
    ExitCode,
    Failed,
    Output,
    _console,
    _done,
    _json_args,
    _output_option,
    _print_json,
    with_client,
    workflow,
)
from kadence._client import WorkflowHandle
from kadence.common import ResetPoint
from kadence.exceptions import WorkflowAlreadyClosedError, WorkflowUpdateFailedError


@workflow.command(short_help="Ask a workflow (or every run a query matches) to cancel.", epilog=BATCH_EPILOG)
@target_options
@click.option("--reason", default="", help="Recorded with the request in the run's history.")
@_output_option
@with_client
def cancel(workflow_id: str | None, run_id: str | None, query: str | None, yes: bool, reason: str, output: str,
           address: str, namespace: str, api_key: str | None) -> None:
    """Ask a workflow to cancel: its code sees asyncio.CancelledError, may clean up, and
    closes as Canceled (or goes on). With --query, every run the filter matches."""
    check_target(workflow_id, run_id, query)
    if query is not None:
        batch(address, namespace, Verb.CANCEL, query, lambda h: h.cancel(reason), yes=yes, output=output)
        return
    assert workflow_id is not None
    single(address, namespace, workflow_id, run_id, lambda h: _cancel(h, reason))
    _done(output, "cancel", workflow_id, run_id, f"Cancel requested for {workflow_id}")


async def _cancel(handle: WorkflowHandle, reason: str) -> None:
    """A closed run exits 3 (not found), as a terminate or a signal of it does; an older
    frontend answered it 409 WorkflowAlreadyClosed, which ``single`` would end with 1."""
    try:
        await handle.cancel(reason)
    except WorkflowAlreadyClosedError as exc:
        raise Failed(ExitCode.NOT_FOUND, exc.message or str(exc)) from None


@workflow.command(short_help="Run an update on a workflow; print its result.")
@click.option("--workflow-id", "-w", required=True, help="The workflow's id.")
@click.option("--run-id", "-r", default=None, help="One run of it (default: the latest).")
@click.option("--name", required=True, help="The update's name.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="JSON", help="One argument as JSON; repeatable.")
@click.option("--update-id", default=None, help="The update's id: asked again with the same id, it runs once.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait for the outcome at most; exit 1 if it has none by then.")
@_output_option
@with_client
def update(workflow_id: str, run_id: str | None, name: str, inputs: tuple[str, ...], update_id: str | None,
           timeout: float | None, output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Run an update on a workflow and print what its handler returned, as JSON (exit 1
    if its validator rejected it, its handler raised, or the run closed first)."""
    args = _json_args(inputs, "--input")

    async def run(handle: WorkflowHandle) -> Any:
        try:
            return await handle.execute_update(name, *args, id=update_id, timeout=timeout)
        except WorkflowUpdateFailedError as exc:
            raise Failed(ExitCode.WORKFLOW, str(exc)) from None

    _print_json(single(address, namespace, workflow_id, run_id, run))


RESET_EPILOG = """\b
Examples:
  kadence workflow reset -w order-42 --type first --reason "bad deploy of v2.3"
  kadence workflow reset -w order-42 --event-id 9
  kadence workflow show -w order-42      (the event ids of its workflow tasks)
"""


@workflow.command(short_help="Reset a run to one of its workflow tasks (a new run goes on from there).",
                  epilog=RESET_EPILOG)
@click.option("--workflow-id", "-w", required=True, help="The workflow's id.")
@click.option("--run-id", "-r", default=None, help="The run to reset (default: the latest).")
@click.option("--event-id", "-e", type=click.IntRange(min=1), default=None,
              help="An event of the workflow task to reset to: its WorkflowTaskStarted, Completed, Failed or"
                   " TimedOut event.")
@click.option("--type", "-t", "point", type=click.Choice([ResetPoint.FIRST.value, ResetPoint.LAST.value]),
              default=None, help="first: the run's first workflow task; last: the last one it completed.")
@click.option("--reason", default="", help="Recorded in both runs' histories.")
@click.option("--no-reapply-signals", "reapply_signals", flag_value=False, default=True,
              help="Do not give the new run the signals received after the reset point.")
@_output_option
@with_client
def reset(workflow_id: str, run_id: str | None, event_id: int | None, point: str | None, reason: str,
          reapply_signals: bool, output: str, address: str, namespace: str, api_key: str | None) -> None:
    """Reset a run to one of its workflow tasks, the repair after a bad deploy: a new run
    replays the history up to that task with the workers' current code and goes on from
    there; signals received after it are received again; the old run, if still open, is
    terminated naming the new one. Prints the new run's id. A point that names no
    workflow task of the run exits 2 saying why."""
    if (event_id is None) == (point is None):
        raise click.UsageError("give either --event-id or --type (first or last)")
    to: int | ResetPoint = event_id if event_id is not None else ResetPoint(point or "")
    new = single(address, namespace, workflow_id, run_id,
                 lambda h: h.reset(to, reason=reason, reapply_signals=reapply_signals))
    if output == Output.JSON:
        _print_json({"workflow_id": new.workflow_id, "run_id": new.run_id})
    else:
        _console().print(Text.assemble("Reset ", (visible(workflow_id), "bold"), f": new run {visible(new.run_id)}"))
