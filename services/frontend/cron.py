"""The classic ``cron_schedule`` on start: a thin form of a schedule.

``POST /workflows`` with ``cron_schedule`` starts nothing now: it creates the schedule
``cron-{workflow_id}`` (services/common/schedules.py ``cron_schedule_id``) whose every firing
starts a new run of that one workflow id, with overlap policy skip (a firing while the
previous run is open is dropped, as a Cadence cron does) and the default catch-up window.
Asking again with the same definition answers the same (a retried start); another
definition for the same workflow id is refused until that schedule is deleted.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from services.common import validation
from services.common.schedules import (
    ScheduleAction,
    ScheduleDefinition,
    ScheduleError,
    ScheduleSpec,
    cron_schedule_id,
    iso_utc,
    request_id_for,
)

from .admin import AdminHandlers
from .errors import InvalidArgument, WorkflowAlreadyStarted
from .validation import StartRequest

# Start fields a schedule's action does not carry: refused with cron_schedule rather than dropped.
_NOT_WITH_CRON = ("id_reuse_policy", "id_conflict_policy", "wait_seconds", "retry_policy")


def definition(req: StartRequest, cron: str, search_attributes: object = None) -> ScheduleDefinition:
    """The schedule a start of ``req`` with ``cron_schedule`` = ``cron`` creates."""
    try:
        spec = ScheduleSpec.given({"cron": cron})
    except ScheduleError as exc:
        raise InvalidArgument(str(exc).replace("spec.cron", "cron_schedule"), field="cron_schedule") from None
    action = ScheduleAction(req.workflow_type, req.task_queue, req.input,
                            execution_timeout_ms=req.execution_timeout_ms, run_timeout_ms=req.run_timeout_ms,
                            workflow_task_timeout_ms=req.workflow_task_timeout_ms, workflow_id=req.workflow_id,
                            memo=req.memo)
    if search_attributes not in (None, {}):
        # Every run the schedule starts takes them (as Temporal's cron runs do); the admin
        # handlers check them against the registry as they check a schedule's.
        try:
            action = dataclasses.replace(action, search_attributes=ScheduleAction.from_json(
                {**action.to_json(), "search_attributes": search_attributes}).search_attributes)
        except ScheduleError as exc:
            raise InvalidArgument(str(exc).replace("action.", ""), field="search_attributes") from None
    try:
        action.check()  # what the schedule's row and its every firing can hold
    except ScheduleError as exc:
        raise InvalidArgument(str(exc).replace("action.", ""), field=exc.field.removeprefix("action.")) from None
    return ScheduleDefinition(spec, action)


async def start_with_cron(admin: AdminHandlers | None, req: StartRequest, cron: object,
                          body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Create (or find, if the same) the cron schedule of ``req``'s workflow; the answer
    names the workflow, the schedule and its next times (no run yet: ``run_id`` null)."""
    if not isinstance(cron, str):
        raise InvalidArgument("cron_schedule must be a cron expression, such as '*/5 * * * *'", field="cron_schedule")
    for name in _NOT_WITH_CRON:
        if body.get(name) not in (None, "", {}, 0):
            raise InvalidArgument(f"{name} cannot be given with cron_schedule (create a schedule instead:"
                                  " POST /schedules)", field=name)
    if admin is None:
        raise InvalidArgument("this frontend does not serve schedules, so no cron_schedule", field="cron_schedule")
    sid = cron_schedule_id(req.workflow_id)
    # The schedule's paths take a name (one longer could never be described or deleted), and
    # so does each firing's request id, which holds the schedule id (one longer is refused
    # by history at every firing).
    for what, value in (("the schedule id cron-{workflow_id}", sid),
                        ("each firing's request id schedule:{namespace}:cron-{workflow_id}:{time in ms}",
                         request_id_for(req.namespace, sid, validation.MAX_TIME_MS))):
        try:
            validation.name(value, what)
        except validation.Invalid as exc:
            raise InvalidArgument(f"workflow_id is too long for cron_schedule: {exc.message}",
                                  field="workflow_id") from None
    d = await admin.registered(req.namespace, definition(req, cron, body.get("search_attributes")))
    try:
        row = await admin.insert_schedule(req.namespace, sid, d)
    except InvalidArgument as exc:  # a cron with no time after now, named as the start gave it
        if exc.field != "spec.cron":
            raise
        raise InvalidArgument(str(exc).replace("spec.cron", "cron_schedule"), field="cron_schedule") from None
    if row is None:
        row = await admin.schedule_row(req.namespace, sid)
        same = (json.loads(row["spec"]) == d.spec.to_json() and json.loads(row["action"]) == d.action.to_json())
        if not same:
            raise WorkflowAlreadyStarted(
                f"workflow {req.workflow_id!r} has a cron schedule already ({sid}, another definition):"
                f" delete it first (kadence schedule delete {sid})", field="workflow_id")
    upcoming = [] if row["next_nominal"] is None else [iso_utc(int(row["next_fire_at"]))]
    return 201, {"workflow_id": req.workflow_id, "run_id": None, "schedule_id": sid, "next_action_times": upcoming}
