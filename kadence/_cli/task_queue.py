"""``kadence task-queue describe NAME``: who polls a task queue and what waits for a worker.

It reads ``GET /api/v1/namespaces/{ns}/task-queues/{name}`` (the web UI's task-queue page
shows the same), with the options and exit codes of every ``kadence`` click CLI
(kadence/_cli/common.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from kadence._cli import common


@click.group(name="task-queue", context_settings=common.CONTEXT_SETTINGS, epilog=common.EXIT_CODES_HELP)
@common.global_options(group=True)
def task_queue() -> None:
    """Inspect task queues: pollers and backlog.

    \b
      kadence task-queue describe orders
      kadence task-queue describe orders -o json
    """


def _ago(iso: str | None, now: datetime) -> str:
    if not iso:
        return ""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = max(0.0, (now - when).total_seconds())
    return f"{iso} ({seconds:.0f}s ago)" if seconds < 120 else f"{iso} ({seconds / 60:.0f}m ago)"


def print_description(d: dict[str, Any], now: datetime | None = None) -> None:
    """The description as people read it: per kind, a line of counts and a table of pollers."""
    now = now or datetime.now(UTC)
    console = common.console()
    console.print(Text(common.visible(f"Task queue {d['task_queue']} in namespace {d['namespace']}"), style="bold"))
    if not d.get("pollers_known", True):
        console.print("No matching instance owns this queue's partition now: pollers are unknown.", style="yellow")
    summary = Table(header_style="bold", box=None)
    for column in ("Kind", "Pollers", "Last poll", "Polls waiting", "Tasks waiting", "Backlog", "Oldest in backlog"):
        summary.add_column(column, overflow="fold")
    for k in d["kinds"]:
        waiting = int(k["tasks_waiting"])
        count = Text(str(len(k["pollers"])), style="red" if waiting and not k["pollers"] else "")
        summary.add_row(k["kind"], count, _ago(k["last_poll_time"], now) or "none lately",
                        "?" if k["polls_waiting"] is None else str(k["polls_waiting"]), str(waiting),
                        str(k["backlog"]), _ago(k["oldest_backlog_time"], now))
    console.print(summary)
    for k in d["kinds"]:
        if k["tasks_waiting"] and not k["pollers"]:
            console.print(f"{k['kind'].capitalize()} tasks wait and no worker polled in the last 5 minutes: start a"
                          f" worker on task queue {d['task_queue']!r} (namespace {d['namespace']!r}).", style="red")
        if not k["pollers"]:
            continue
        table = Table(title=f"{k['kind'].capitalize()} pollers", title_justify="left", header_style="bold")
        table.add_column("Identity", overflow="fold")
        table.add_column("Last poll")
        for p in k["pollers"]:
            table.add_row(p["identity"], _ago(p["last_poll_time"], now))
        console.print(table)


@task_queue.command(short_help="Pollers (identity, last poll) and backlog of a task queue.")
@common.global_options(group=False)
@click.argument("name")
def describe(name: str) -> None:
    """Show who polls task queue NAME (identity and last poll time, per kind: workflow and
    activity tasks; pollers are remembered for 5 minutes) and the tasks waiting for a
    worker (in memory and in the PostgreSQL backlog, with the oldest one's age)."""
    found = common.run(common.connection(), lambda client: client.describe_task_queue(name))
    if common.output() == common.Output.JSON:
        common.print_json(found)
    else:
        print_description(found)


def main(argv: list[str]) -> int:
    """Run ``kadence task-queue`` with ``argv`` (the words after ``task-queue``); the exit code."""
    return common.main(task_queue, argv, "kadence task-queue")
