"""``kadence namespace ...`` and ``kadence schedule ...``: namespaces and schedules from the terminal.

Both talk to a frontend over the HTTP API through the client (kadence/_admin.py), with the
options and exit codes every ``kadence`` click CLI shares (kadence/_cli/common.py): 0 done,
1 refused or failed, 2 bad usage, 3 not found, 4 no answer or throttled (unreachable, 503, 504 or 429).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import click

from kadence._cli import common
from kadence._cli.common import DEFAULT_ADDRESS, ExitCode, Failed
from kadence._client import Client

__all__ = ["DEFAULT_ADDRESS", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Failed", "cli",
           "main"]
EXIT_FAILED, EXIT_USAGE = int(ExitCode.FAILED), int(ExitCode.USAGE)
EXIT_NOT_FOUND, EXIT_UNAVAILABLE = int(ExitCode.NOT_FOUND), int(ExitCode.UNAVAILABLE)
OVERLAP_POLICIES = ["skip", "buffer_one", "allow_all", "cancel_other", "terminate_other"]


def _run(ctx: click.Context, call: Callable[[Client], Awaitable[Any]]) -> Any:
    """Connect with the global options, run ``call``, map API errors to exit codes."""
    return common.run(common.connection(), call)


def _print(ctx: click.Context, value: Any, table: Callable[[Any], None]) -> None:
    if common.output() == common.Output.JSON:
        click.echo(json.dumps(value, indent=2, sort_keys=False))
    else:
        table(value)


def _rows(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(common.visible(str(r[i]))) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(common.visible(str(c)).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {common.visible(str(v))}")


_common = common.global_options


@click.group(context_settings=common.CONTEXT_SETTINGS)
def cli() -> None:
    """Kadence administration."""


# -- namespaces ----------------------------------------------------------------------------------


@cli.group(context_settings=common.CONTEXT_SETTINGS, epilog=common.EXIT_CODES_HELP)
@_common(group=True)
def namespace() -> None:
    """Register, list, describe and update namespaces.

    Every workflow lives in a namespace; requests to one that is not registered are
    refused (404 NamespaceNotFound). Closed runs are deleted from PostgreSQL once older
    than their namespace's retention.
    """


def _namespace_table(ns: dict[str, Any]) -> None:
    _fields([("Name", ns["name"]), ("Description", ns["description"]), ("Owner", ns["owner_email"]),
             ("Retention", ns["retention"]), ("State", ns["state"]), ("Created", ns["created_time"]),
             ("Updated", ns["updated_time"]), *_limit_rows(ns.get("limits") or {})])


def _limit_rows(limits: dict[str, Any]) -> list[tuple[str, str]]:
    """The namespace's limits on each frontend; one it does not set is the cluster's default."""
    names = (("rps", "Rate limit", "/s"), ("concurrent_polls", "Poll limit", " open"),
             ("visibility_rps", "List limit", "/s"), ("answer_rps", "Answer limit", "/s"))
    return [(label, "cluster default" if limits.get(key) is None else f"{limits[key]:g}{unit}")
            for key, label, unit in names]


@namespace.command("create")
@_common(group=False)
@click.argument("name")
@click.option("--retention", required=True, help="How long closed runs are kept: 30d, 12h, 5m (a bare number is days).")
@click.option("--description", default="", help="What the namespace is for.")
@click.option("--owner-email", default="", help="Who to ask about it.")
@click.pass_context
def namespace_create(ctx: click.Context, name: str, retention: str, description: str, owner_email: str) -> None:
    """Register namespace NAME."""
    ns = _run(ctx, lambda c: c.create_namespace(name, retention=retention, description=description,
                                                owner_email=owner_email))
    _print(ctx, ns, _namespace_table)


@namespace.command("describe")
@_common(group=False)
@click.argument("name", required=False)
@click.pass_context
def namespace_describe(ctx: click.Context, name: str | None) -> None:
    """Show namespace NAME (default: --namespace)."""
    _print(ctx, _run(ctx, lambda c: c.describe_namespace(name)), _namespace_table)


@namespace.command("list")
@_common(group=False)
@click.pass_context
def namespace_list(ctx: click.Context) -> None:
    """List the registered namespaces."""
    found = _run(ctx, lambda c: c.list_namespaces())
    _print(ctx, found, lambda rows: _rows([(n["name"], n["retention"], n["state"], n["owner_email"],
                                             n["description"]) for n in rows],
                                           ("NAME", "RETENTION", "STATE", "OWNER", "DESCRIPTION")))


@namespace.command("update")
@_common(group=False)
@click.argument("name")
@click.option("--retention", default=None, help="New retention: 30d, 12h, 5m (a bare number is days).")
@click.option("--description", default=None, help="New description.")
@click.option("--owner-email", default=None, help="New owner email.")
@click.option("--rps-limit", default=None, metavar="N|default",
              help="User API calls a second the namespace may make on each frontend ('default': the cluster's).")
@click.option("--poll-limit", default=None, metavar="N|default",
              help="Long polls the namespace may hold open on each frontend ('default': the cluster's).")
@click.option("--visibility-rps-limit", default=None, metavar="N|default",
              help="List and count queries a second on each frontend ('default': the cluster's).")
@click.option("--answer-rps-limit", default=None, metavar="N|default",
              help="Worker answers (task answers, heartbeats, query answers) a second on each frontend"
                   " ('default': the cluster's).")
@click.pass_context
def namespace_update(ctx: click.Context, name: str, retention: str | None, description: str | None,
                     owner_email: str | None, rps_limit: str | None, poll_limit: str | None,
                     visibility_rps_limit: str | None, answer_rps_limit: str | None) -> None:
    """Change namespace NAME's retention, description, owner or limits."""
    given = {"rps": rps_limit, "concurrent_polls": poll_limit, "visibility_rps": visibility_rps_limit,
             "answer_rps": answer_rps_limit}
    limits = {key: _limit(key, value) for key, value in given.items() if value is not None}
    if retention is None and description is None and owner_email is None and not limits:
        raise click.UsageError("give at least one of --retention, --description, --owner-email, --rps-limit,"
                               " --poll-limit, --visibility-rps-limit, --answer-rps-limit")
    ns = _run(ctx, lambda c: c.update_namespace(name, retention=retention, description=description,
                                                owner_email=owner_email, limits=limits or None))
    _print(ctx, ns, _namespace_table)


def _limit(key: str, value: str) -> float | None:
    """A limit option's value: a positive number (whole for polls), or 'default' (None)."""
    if value.strip().lower() == "default":
        return None
    try:
        number = int(value) if key == "concurrent_polls" else float(value)
    except ValueError:
        raise click.UsageError(f"a limit is a positive {'whole ' if key == 'concurrent_polls' else ''}number"
                               f" or 'default', not {value!r}") from None
    if number <= 0:
        raise click.UsageError(f"a limit must be positive (or 'default'), not {value!r}")
    return number


# -- schedules -----------------------------------------------------------------------------------


@cli.group(context_settings=common.CONTEXT_SETTINGS, epilog=common.EXIT_CODES_HELP)
@_common(group=True)
def schedule() -> None:
    """Start workflows by cron expression or interval.

    Each firing starts the schedule's workflow with the id SCHEDULE_ID-<scheduled time,
    ISO 8601 UTC>, so a firing is never started twice. Schedules live in PostgreSQL and
    keep firing across restarts; firings missed while the cluster was down run if they are
    within the catch-up window.
    """


def _schedule_state(s: dict[str, Any]) -> str:
    """paused, active, or why it no longer fires (a frontend before invalid_schedule_error
    does not send the field)."""
    why = s.get("invalid_schedule_error")
    if why:
        return f"cannot fire ({why})"
    return "paused" if s["paused"] else "active"


def _schedule_table(s: dict[str, Any]) -> None:
    spec = s["spec"]
    when = f"cron {spec['cron']!r}" if "cron" in spec else f"every {spec['interval']}" + (
        f" (offset {spec['offset']})" if spec.get("offset", "0s") != "0s" else "")
    action = s["action"]
    _fields([
        ("Schedule", s["schedule_id"]), ("When", f"{when} in {spec['time_zone']}, jitter {spec['jitter']}"),
        ("Workflow", f"{action['workflow_type']} on {action['task_queue']}, input {json.dumps(action['input'])}"),
        ("Overlap policy", s["overlap_policy"]), ("Catch-up window", s["catchup_window"]),
        ("State", _schedule_state(s) + (f": {s['note']}" if s["note"] else "")),
        ("Next times", ", ".join(s["next_action_times"]) or "-"),
        ("Started / skipped", f"{s['actions_started']} / {s['actions_skipped']}"),
        ("Buffered", s["buffered"] or "-"), ("Pending triggers", s["pending_triggers"]),
        ("Latest workflow", s["last_workflow_id"] or "-"),
    ])
    if s["recent_actions"]:
        click.echo("Recent actions:")
        for a in s["recent_actions"]:
            line = f"  {a['scheduled_time']}  {a['result']:<8} {a['how']:<10} {a['workflow_id'] or ''}"
            click.echo(common.visible(line))


@schedule.command("create")
@_common(group=False)
@click.argument("schedule_id")
@click.option("--workflow-type", "-t", required=True, help="The workflow each firing starts.")
@click.option("--task-queue", "--tq", "-q", required=True,
              help="Its task queue (--tq as in `kadence workflow start`; -q is kept for older scripts).")
@click.option("--input", "input_json", default="[]", show_default=True, help="Its arguments, a JSON array.")
@click.option("--cron", default=None, help="A cron expression, such as '*/5 * * * *'.")
@click.option("--interval", default=None, help="Or an interval, such as 5s, 10m, 1h.")
@click.option("--offset", default=None, help="With --interval: the phase, such as 30s in every 1m.")
@click.option("--jitter", default=None, help="Delay each firing by up to this much (deterministic per firing).")
@click.option("--time-zone", default="UTC", show_default=True, help="IANA time zone of the cron expression.")
@click.option("--overlap-policy", type=click.Choice(OVERLAP_POLICIES), default="skip", show_default=True,
              help="What a firing does while the previous workflow still runs.")
@click.option("--catchup-window", default=None, help="How late a missed firing may still run (default 1m).")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--note", default="", help="A note, such as why it is paused.")
@click.option("--search-attribute", "-a", "attributes", multiple=True, metavar="NAME=VALUE",
              help="A search attribute of every run it starts, registered in the namespace; VALUE is JSON,"
                   " or else taken as a string. Repeatable.")
@click.option("--memo", "-m", "memo", multiple=True, metavar="NAME=VALUE",
              help="A memo field of every run it starts; VALUE is JSON, or else taken as a string. Repeatable.")
@click.pass_context
def schedule_create(ctx: click.Context, schedule_id: str, workflow_type: str, task_queue: str, input_json: str,
                    cron: str | None, interval: str | None, offset: str | None, jitter: str | None,
                    time_zone: str, overlap_policy: str, catchup_window: str | None, paused: bool,
                    note: str, attributes: tuple[str, ...], memo: tuple[str, ...]) -> None:
    """Create schedule SCHEDULE_ID (give --cron or --interval)."""
    if (cron is None) == (interval is None):
        raise click.UsageError("give exactly one of --cron or --interval")
    try:
        args = json.loads(input_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    if not isinstance(args, list):
        raise click.BadParameter("must be a JSON array of arguments", param_hint="--input")
    memo_fields = common.name_values(memo, "--memo") or None
    search_attributes = common.name_values(attributes, "--search-attribute") or None
    created = _run(ctx, lambda c: c.create_schedule(
        schedule_id, workflow_type, *args, task_queue=task_queue, cron=cron, interval=interval, offset=offset,
        jitter=jitter, time_zone=time_zone, overlap_policy=overlap_policy, catchup_window=catchup_window,
        paused=paused, note=note, memo=memo_fields, search_attributes=search_attributes))
    _print(ctx, created, _schedule_table)


@schedule.command("describe")
@_common(group=False)
@click.argument("schedule_id")
@click.pass_context
def schedule_describe(ctx: click.Context, schedule_id: str) -> None:
    """Show a schedule: its spec, next times and recent actions."""
    _print(ctx, _run(ctx, lambda c: c.describe_schedule(schedule_id)), _schedule_table)


@schedule.command("list")
@_common(group=False)
@click.pass_context
def schedule_list(ctx: click.Context) -> None:
    """List the namespace's schedules."""
    found = _run(ctx, lambda c: c.list_schedules())

    def table(rows: list[dict[str, Any]]) -> None:
        _rows([(s["schedule_id"], s["spec"].get("cron") or f"every {s['spec']['interval']}",
                s["action"]["workflow_type"], _schedule_state(s),
                (s["next_action_times"] or ["-"])[0], str(s["actions_started"])) for s in rows],
              ("SCHEDULE", "WHEN", "WORKFLOW", "STATE", "NEXT", "STARTED"))

    _print(ctx, found, table)


@schedule.command("pause")
@_common(group=False)
@click.argument("schedule_id")
@click.option("--note", default="", help="Why it is paused.")
@click.pass_context
def schedule_pause(ctx: click.Context, schedule_id: str, note: str) -> None:
    """Pause a schedule (triggers still run)."""
    _print(ctx, _run(ctx, lambda c: c.pause_schedule(schedule_id, note)), _schedule_table)


@schedule.command("unpause")
@_common(group=False)
@click.argument("schedule_id")
@click.option("--note", default="", help="A note.")
@click.pass_context
def schedule_unpause(ctx: click.Context, schedule_id: str, note: str) -> None:
    """Resume a schedule from now (times passed while paused are not caught up)."""
    _print(ctx, _run(ctx, lambda c: c.unpause_schedule(schedule_id, note)), _schedule_table)


@schedule.command("trigger")
@_common(group=False)
@click.argument("schedule_id")
@click.pass_context
def schedule_trigger(ctx: click.Context, schedule_id: str) -> None:
    """Start the schedule's workflow now, whatever its overlap policy; prints its workflow id."""
    wid = _run(ctx, lambda c: c.trigger_schedule(schedule_id))
    _print(ctx, {"workflow_id": wid}, lambda v: click.echo(common.visible(v["workflow_id"])))


@schedule.command("delete")
@_common(group=False)
@click.argument("schedule_id")
@click.pass_context
def schedule_delete(ctx: click.Context, schedule_id: str) -> None:
    """Delete a schedule; the workflows it started carry on."""
    _run(ctx, lambda c: c.delete_schedule(schedule_id))
    _print(ctx, {"deleted": schedule_id}, lambda v: click.echo(common.visible(f"deleted schedule {schedule_id}")))


def main(argv: Sequence[str]) -> int:
    """Run ``kadence namespace|schedule ...`` with ``argv`` (the group's name first); the exit code."""
    return common.main(cli, list(argv), "kadence")
