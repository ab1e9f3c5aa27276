"""The client's namespace, task-queue and schedule operations (a mixin of ``Client``).

Namespaces are registered with a retention period; schedules start a workflow by cron
expression or interval (README, "Namespaces", "Retention" and "Schedules").

Retried as a start is (unreachable, 503/504, 429; within the client's retry budget), and a
retry of a try that was taken gets that try's answer (docs/sdk.md, "Retried calls"): creates
carry a request id the server keeps with what they made; updates, pauses and unpauses set
what they set again; a delete carries a request id too (the server keeps it a day). A trigger is not
retried: every trigger is one more start, and nothing tells a repeat from a second trigger.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from kadence._converter import check_args
from kadence._http import Transport, path_segment
from kadence._retry import Backoff, retrying, unavailable_or_throttled
from kadence._visibility import search_attributes_json
from kadence._workflow.definition import workflow_name_of
from kadence.exceptions import RPCError

Duration = timedelta | str


def duration_text(value: Duration) -> str:
    """A duration as the API takes it: a timedelta as milliseconds, text (``30d``, ``5s``) as is."""
    if isinstance(value, timedelta):
        return f"{round(value.total_seconds() * 1000)}ms"
    return value


class AdminMixin:
    """Namespace administration and schedules; schedules are those of the client's namespace."""

    transport: Transport
    namespace: str
    retry: Backoff  # the client's: bounds these calls' retries as its others'
    _encode_memo: Callable[[Mapping[str, Any]], Awaitable[Any]]  # the client's: through its data converter

    async def _retried(self, method: str, path: str, body: Mapping[str, Any] | None = None, *, what: str,
                       params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``method path`` sent again unchanged while the frontend is unreachable, busy or
        refuses it as over the namespace's limit. A frontend of an earlier build refuses a
        ``request_id`` it does not take (400 on that field): the call goes once more without it,
        as that build's SDK sent it."""
        try:
            return await retrying(lambda: self.transport.call(method, path, body=body, params=params),
                                  backoff=self.retry, retry_if=unavailable_or_throttled, what=what)
        except RPCError as err:
            if err.status != 400 or err.field != "request_id":
                raise
        body = None if body is None else {k: v for k, v in body.items() if k != "request_id"}
        params = None if params is None else {k: v for k, v in params.items() if k != "request_id"}
        return await self.transport.call(method, path, body=body, params=params)

    # -- namespaces --------------------------------------------------------------------------------

    async def create_namespace(self, name: str, *, retention: Duration, description: str = "",
                               owner_email: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Register namespace ``name``; its closed runs are deleted once ``retention`` old
        (a timedelta, or text such as ``30d``, ``12h``, ``5m``; 1 minute at least).
        ``request_id`` (one is drawn when None) makes the call's retries, and a later call
        with the same id, answer as the create that made it rather than "already exists"."""
        body = {"name": name, "retention": duration_text(retention), "description": description,
                "owner_email": owner_email or None, "request_id": request_id or str(uuid.uuid4())}
        return await self._retried("POST", "/api/v1/namespaces", body, what=f"create of namespace {name}")

    async def list_namespaces(self) -> list[dict[str, Any]]:
        answer = await self.transport.call("GET", "/api/v1/namespaces")
        return list(answer.get("namespaces", []))

    async def describe_namespace(self, name: str | None = None) -> dict[str, Any]:
        """The namespace ``name`` (default: the client's)."""
        return await self.transport.call("GET", f"/api/v1/namespaces/{path_segment(name or self.namespace)}")

    async def update_namespace(self, name: str | None = None, *, retention: Duration | None = None,
                               description: str | None = None, owner_email: str | None = None,
                               limits: Mapping[str, float | None] | None = None) -> dict[str, Any]:
        """Change the fields given (None: kept) of namespace ``name`` (default: the client's).
        ``limits``: the namespace's own limits on each frontend, by name (``rps``,
        ``concurrent_polls``, ``visibility_rps``, ``answer_rps``); a limit given as None goes back to the
        cluster's default, one left out is kept (docs/security.md)."""
        body: dict[str, Any] = {"description": description, "owner_email": owner_email,
                                "retention": None if retention is None else duration_text(retention)}
        body = {k: v for k, v in body.items() if v is not None}
        if limits is not None:
            body["limits"] = dict(limits)
        return await self._retried("PATCH", f"/api/v1/namespaces/{path_segment(name or self.namespace)}", body,
                                   what=f"update of namespace {name or self.namespace}")

    # -- task queues ------------------------------------------------------------------------------

    async def describe_task_queue(self, task_queue: str) -> dict[str, Any]:
        """Who polls ``task_queue`` (identity and last poll time, per kind: workflow and
        activity tasks) and what waits for a worker (in memory and in the backlog), as
        ``kadence task-queue describe`` shows it. ``pollers_known`` is false while no
        matching instance owns the queue's partition."""
        return await self.transport.call(
            "GET", f"/api/v1/namespaces/{path_segment(self.namespace)}/task-queues/{path_segment(task_queue)}")

    # -- schedules --------------------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        workflow: str | type | Callable[..., Any],
        *args: Any,
        task_queue: str,
        cron: str | None = None,
        interval: Duration | None = None,
        offset: Duration | None = None,
        jitter: Duration | None = None,
        time_zone: str = "UTC",
        overlap_policy: str = "skip",
        catchup_window: Duration | None = None,
        paused: bool = False,
        note: str = "",
        request_id: str | None = None,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a schedule that starts ``workflow(*args)`` on ``task_queue`` by ``cron``
        expression or every ``interval``; each start has the workflow id
        ``{schedule_id}-{scheduled time, ISO 8601 UTC}``.

        ``overlap_policy``: skip, buffer_one, allow_all, cancel_other or terminate_other (what a firing does
        while the previous workflow runs); ``catchup_window``: how late a missed firing may
        still run after downtime (default 1 minute). ``memo`` and ``search_attributes``: every
        run's, as a start's (the attributes registered in the namespace). ``request_id`` (one is
        drawn when None): a retry, or a later call with the same id, answers as the create that
        made the schedule rather than "already exists"."""
        if (cron is None) == (interval is None):
            raise ValueError("give exactly one of cron=... or interval=...")
        spec: dict[str, Any] = {"time_zone": time_zone}
        if cron is not None:
            spec["cron"] = cron
        if interval is not None:
            spec["interval"] = duration_text(interval)
        if offset is not None:
            spec["offset"] = duration_text(offset)
        if jitter is not None:
            spec["jitter"] = duration_text(jitter)
        workflow_type = workflow_name_of(workflow)
        action: dict[str, Any] = {"workflow_type": workflow_type, "task_queue": task_queue,
                                  "input": check_args(args, what=f"workflow {workflow_type}")}
        if execution_timeout is not None:
            action["execution_timeout_ms"] = round(execution_timeout.total_seconds() * 1000)
        if run_timeout is not None:
            action["run_timeout_ms"] = round(run_timeout.total_seconds() * 1000)
        if memo is not None:
            action["memo"] = await self._encode_memo(memo)
        if search_attributes:
            action["search_attributes"] = search_attributes_json(search_attributes)
        body: dict[str, Any] = {"schedule_id": schedule_id, "spec": spec, "action": action,
                                "overlap_policy": overlap_policy, "paused": paused, "note": note,
                                "request_id": request_id or str(uuid.uuid4())}
        if catchup_window is not None:
            body["catchup_window"] = duration_text(catchup_window)
        return await self._retried("POST", "/schedules", body, what=f"create of schedule {schedule_id}")

    async def describe_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self.transport.call("GET", f"/schedules/{path_segment(schedule_id)}")

    async def list_schedules(self) -> list[dict[str, Any]]:
        return list((await self.transport.call("GET", "/schedules")).get("schedules", []))

    async def pause_schedule(self, schedule_id: str, note: str = "") -> dict[str, Any]:
        return await self._retried("POST", f"/schedules/{path_segment(schedule_id)}/pause", {"note": note},
                                   what=f"pause of schedule {schedule_id}")

    async def unpause_schedule(self, schedule_id: str, note: str = "") -> dict[str, Any]:
        """Resume from now (the times that passed while paused are not caught up)."""
        return await self._retried("POST", f"/schedules/{path_segment(schedule_id)}/unpause", {"note": note},
                                   what=f"unpause of schedule {schedule_id}")

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Start the schedule's workflow now, whatever its overlap policy; its workflow id.
        Not retried (a repeat would be a second start): a lost answer raises, and the caller
        may look at the schedule's recent actions before triggering again."""
        answer = await self.transport.call("POST", f"/schedules/{path_segment(schedule_id)}/trigger", body={})
        return str(answer["workflow_id"])

    async def delete_schedule(self, schedule_id: str, *, request_id: str | None = None) -> None:
        """Delete the schedule; the workflows it started carry on. ScheduleNotFound when
        there is none, but not for a retry (or a call with the same ``request_id``, one is
        drawn when None) of the delete that deleted it."""
        await self._retried("DELETE", f"/schedules/{path_segment(schedule_id)}",
                            what=f"delete of schedule {schedule_id}",
                            params={"request_id": request_id or str(uuid.uuid4())})
