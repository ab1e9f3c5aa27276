"""Handlers: validate one API call (naming the bad field) and route it to the engine.

Each handler takes the path parameters, the query string and the JSON body as plain
mappings and returns (status, answer); the transport in ``app.py`` does the HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from services.common import colocation, outage
from services.common.matching import QueryScope
from services.common.visibility.reads import VisibilityReads

from . import validation as v
from .admin import AdminHandlers
from .auth import authorize_task_queue, caller_may, worker_task_queues
from .cron import start_with_cron
from .engine import Engine, QueuedCommand, TaskAnswer, no_running_activity
from .errors import ActivityNotFound, FrontendError, InvalidArgument, Unavailable
from .schema_check import check_fast as check_body
from .tokens import TaskToken
from .validation import StartRequest
from .visibility import VisibilityHandlers, bad_search_attributes

Params = Mapping[str, str]


@dataclass(frozen=True)
class Streamed:
    """An answer ``{key: [...]}`` whose items the transport writes as they are ready, one per
    line, instead of when the last one is (app.py). ``items`` yields the items in groups, each
    the items that became ready together, written in one go. The items carry their own status."""

    key: str
    items: AsyncGenerator[list[dict[str, Any]], None]


Answer = tuple[int, dict[str, Any] | Streamed]

OK = 200
QUERY_TIMEOUT_MS = 10_000
MAX_ANSWERS = 1000
MAX_TOGETHER = 1000  # items of a call that takes many (starts, result waits)
# The operations that may be sent together through answer_tasks.
ANSWER_OPERATIONS = frozenset({"complete_workflow_task", "fail_workflow_task", "timer_ahead_workflow_task",
                               "complete_activity_task",
                               "fail_activity_task", "heartbeat_activity_task", "cancel_activity_task"})


class Handlers(VisibilityHandlers):
    # Where a start with cron_schedule creates its schedule (cron.py); build_app sets it.
    cron_starts: AdminHandlers | None = None

    def __init__(self, engine: Engine, visibility: VisibilityReads | None = None) -> None:
        self.engine = engine
        self.visibility = visibility

    def _token(self, ns: str, body: dict[str, Any], kind: str) -> TaskToken:
        token = TaskToken.decode(body.get("task_token"), self.engine.token_keys)
        token.check_namespace(ns)
        if token.kind != kind:
            raise InvalidArgument(f"task_token belongs to {_a(token.kind)} task, not to {_a(kind)} task",
                                  field="task_token")
        authorize_task_queue(f"poll_{kind}_tasks", ns, token.task_queue)
        return token

    async def activity_task_token(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """The task token of an activity's running attempt, by ids (an async completion's
        handle made from ``workflow_id``/``activity_id``); only for a principal that may
        answer the activity's task queue. Any other principal is answered as if no such
        activity ran (404 ActivityNotFound, the same body), not 403: a caller granted one
        queue of the namespace must not learn which activity ids run on the others."""
        ns = v.namespace(path["namespace"])
        wid = v.name({}, "workflow_id", value=path["workflow_id"])
        activity_id = v.name({}, "activity_id", value=path["activity_id"])
        token = await self.engine.activity_task_token(ns, wid, v.optional_str(dict(query), "run_id"), activity_id)
        if not caller_may("poll_activity_tasks", ns, token.task_queue):
            raise no_running_activity(token.run_id, wid, activity_id)
        return OK, {"task_token": token.encode(self.engine.token_keys)}

    async def _activity_token(self, ns: str, body: dict[str, Any]) -> TaskToken:
        """An activity answer's token; with ``current_attempt`` (an async completion's
        handle sets it), NotFound unless its attempt is still running, rather than a
        stale answer accepted and then dropped by history."""
        token = self._token(ns, body, "activity")
        if v.flag(body, "current_attempt"):
            await self.engine.check_activity_attempt(token)
        return token

    async def _send_activity_answer(self, answer: TaskAnswer, body: dict[str, Any]) -> Answer:
        """Send an activity's outcome; with ``current_attempt`` only while its attempt runs,
        and a repeat of the answer that ended it (a retry whose first answer was lost) is
        answered ok without being sent again (async_answers.py)."""
        if v.flag(body, "current_attempt"):
            try:
                await self.engine.check_activity_attempt(answer.token)
            except ActivityNotFound:
                if await self.engine.activity_answer_taken(answer):
                    return OK, {}
                raise
        return await self._send(answer)

    # -- workflows ------------------------------------------------------------------------------

    async def start(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        if body.get("cron_schedule") is not None:
            return await start_with_cron(self.cron_starts, v.start_request(path["namespace"], body),
                                         body["cron_schedule"], body)
        req = await self.with_search_attributes(v.start_request(path["namespace"], body), body)
        # With wait_seconds, the answer also waits for the run's outcome (as GET .../result
        # does): start and wait in one exchange instead of two.
        return 201, await self.engine.start(req, v.seconds(body, "wait_seconds", 0.0, 600.0))

    async def start_batch(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Start each item as ``start`` would; each result is answered as soon as it is known.

        A client with many starts (and result waits) in flight sends them together: one
        HTTP exchange instead of one each, and no item waits for a slower neighbour. The
        items are checked one by one as ``start`` checks them, then those that pass are
        produced as one group (Engine.start_all: in order, under one produce wait); an item
        with a cron schedule or search attributes (which read the database first) runs as
        its own call.
        """
        from .openapi import COMPONENTS, request_schema  # here: openapi.py imports this module

        return OK, Streamed("results", self._starts(path, query, _items(body, "starts"), request_schema("start"),
                                                    COMPONENTS))

    async def _starts(self, path: Params, query: Params, items: list[Any], schema: Any, components: Any
                      ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The results of start_batch, in groups as they are known (see _as_ready)."""
        began = asyncio.get_running_loop().time()  # each item's wait counts from here, as alone
        known: list[dict[str, Any]] = []
        alone: list[tuple[int, dict[str, Any]]] = []
        grouped: list[tuple[int, StartRequest, float]] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidArgument(f"starts[{index}] must be an object", field=f"starts[{index}]")
                check_body(schema, item, components)
                if item.get("cron_schedule") is not None or item.get("search_attributes") not in (None, {}):
                    alone.append((index, item))
                    continue
                # What start checks, in its order (with_search_attributes has nothing to do here).
                req = v.start_request(path["namespace"], item)
                grouped.append((index, req, v.seconds(item, "wait_seconds", 0.0, 600.0)))
            except FrontendError as exc:
                known.append(_item_refused(index, exc))
        tasks: list[asyncio.Future[dict[str, Any]]] = [
            asyncio.ensure_future(self._start_alone(path, query, index, item)) for index, item in alone]
        queued: list[tuple[QueuedCommand, asyncio.Future[dict[str, Any]]]] = []
        try:
            sent = await self.engine.start_all([req for _, req, _ in grouped]) if grouped else []
            for (index, req, wait), one in zip(grouped, sent, strict=True):
                if isinstance(one, FrontendError):
                    known.append(_item_refused(index, one))
                    continue
                task = asyncio.ensure_future(self._finish_start(index, req, one, wait, began))
                tasks.append(task)
                queued.append((one, task))
            async with contextlib.aclosing(_tasks_as_ready(tasks, known)) as groups:
                async for group in groups:
                    yield group
        finally:
            for t in tasks:
                t.cancel()
            for one, started in queued:
                if not started.done():  # a task cancelled before it ran never reaches its own clean-up
                    self.engine.forget(one)

    async def _start_alone(self, path: Params, query: Params, index: int, item: dict[str, Any]) -> dict[str, Any]:
        try:
            status, answer = await self.start(path, query, item)
        except _ITEM_ERRORS as exc:
            return _item_refused(index, exc)
        return {"index": index, "status": status, "answer": answer}

    async def _finish_start(self, index: int, req: StartRequest, queued: QueuedCommand, wait: float,
                            began: float) -> dict[str, Any]:
        try:
            answer = await self.engine.finish_start(req, queued, wait, began)
        except _ITEM_ERRORS as exc:
            return _item_refused(index, exc)
        return {"index": index, "status": 201, "answer": answer}

    async def result_batch(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Wait for each item's run as ``result`` would; each outcome is answered as soon as it
        is known (a run still open when its wait runs out: status Running)."""
        from .openapi import RESULT_WAIT

        async def result(item: dict[str, Any]) -> Answer:
            return await self.result({**path, "workflow_id": item["workflow_id"]}, item, {})

        return _together(body, "waits", RESULT_WAIT, result)

    async def signal_with_start(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        req = await self.with_search_attributes(
            v.start_request(path["namespace"], body, workflow_id=path["workflow_id"]), body)
        signal_name = v.name(body, "signal_name")
        signal_input = v.array_json(body, "signal_input")
        return OK, await self.engine.signal_with_start(req, signal_name, signal_input)

    async def signal(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        return OK, await self.engine.signal(
            ns, wid, v.optional_str(body, "run_id"), v.name(body, "signal_name"), v.array_json(body, "input"),
            v.optional_str(body, "request_id") or "", v.optional_str(body, "identity") or "",
        )

    async def terminate(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        reason = v.optional_str(body, "reason", max_len=10_000) or ""
        return OK, await self.engine.terminate(
            ns, wid, v.optional_str(body, "run_id"), reason,
            v.optional_str(body, "request_id") or "", v.optional_str(body, "identity") or "",
        )

    async def cancel(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        reason = v.optional_str(body, "reason", max_len=10_000) or ""
        return OK, await self.engine.cancel(
            ns, wid, v.optional_str(body, "run_id"), reason,
            v.optional_str(body, "request_id") or "", v.optional_str(body, "identity") or "",
        )

    async def reset(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        return OK, await self.engine.reset(
            ns, wid, v.optional_str(body, "run_id"), v.optional_str(body, "reset_point") or "",
            v.non_negative_int(body, "event_id", 0, maximum=2**63 - 1), body.get("reapply_signals") is not False,
            v.optional_str(body, "reason", max_len=10_000) or "",
            v.optional_str(body, "request_id") or "", v.optional_str(body, "identity") or "",
        )

    async def update(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        stage = v.optional_str(body, "wait_for_stage") or "completed"
        if stage not in ("accepted", "completed"):
            raise InvalidArgument("wait_for_stage must be accepted or completed", field="wait_for_stage")
        return OK, await self.engine.update(
            ns, wid, v.optional_str(body, "run_id"), v.name(body, "update_id"), v.name(body, "update_name"),
            v.array_json(body, "input"), stage, v.seconds(body, "wait_seconds", 30.0, 600.0),
            v.optional_str(body, "request_id") or "", v.optional_str(body, "identity") or "",
        )

    async def query(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name(body, "workflow_id", value=path["workflow_id"])
        timeout_ms = v.non_negative_int(body, "timeout_ms", QUERY_TIMEOUT_MS, maximum=600_000)
        return OK, await self.engine.query(
            ns, wid, v.optional_str(body, "run_id"), v.name(body, "query_type"), v.array_json(body, "args"),
            timeout_ms / 1000.0,
        )

    async def describe(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name({}, "workflow_id", value=path["workflow_id"])
        return OK, await self.engine.describe(ns, wid, v.optional_str(dict(query), "run_id"))

    async def history(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name({}, "workflow_id", value=path["workflow_id"])
        q = dict(query)
        page_size = v.int_in(q, "page_size", 1000, 1, 10_000)
        token = v.optional_str(q, "next_page_token")
        return OK, await self.engine.history(ns, wid, v.optional_str(q, "run_id"), page_size, token)

    async def result(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        wid = v.name({}, "workflow_id", value=path["workflow_id"])
        q = dict(query)
        wait = v.seconds(q, "wait_seconds", 30.0, 600.0)
        return OK, await self.engine.result(ns, wid, v.optional_str(q, "run_id"), wait)

    # -- workflow tasks ------------------------------------------------------------------------------

    async def poll_workflow_tasks(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        req = v.poll_request(path["namespace"], path["task_queue"], body)
        return OK, await self.engine.poll_workflow_tasks(req)

    async def _send(self, answer: TaskAnswer) -> Answer:
        await self.engine.respond(answer.name, answer.token, answer.identity, **answer.fields)
        return OK, {}

    async def complete_workflow_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send(await self._complete_workflow_task(path, body))

    async def _complete_workflow_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "workflow")
        commands = v.commands(body)
        identity = v.optional_str(body, "identity") or ""
        bad = await self.bad_upserts(ns, commands)
        if bad is not None:
            # As a code error would: the task fails in history (visible there) and is retried.
            return TaskAnswer("RespondWorkflowTaskFailed", token, identity,
                              {"cause": "BadSearchAttributes", "failure": bad_search_attributes(bad)})
        return TaskAnswer("RespondWorkflowTaskCompleted", token, identity,
                          {"commands": commands, "started_time": token.started_time,
                           "runs_timers_ahead": v.flag(body, "runs_timers_ahead")})

    async def timer_ahead_workflow_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send(await self._timer_ahead_workflow_task(path, body))

    async def _timer_ahead_workflow_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        """A workflow task run on a user timer's firing by the worker holding the run
        (docs/protocol.md, timer run-ahead), under the token of the last task it was handed."""
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "workflow")
        timer_id = v.name(body, "timer_id")
        identity = v.optional_str(body, "identity") or ""
        ahead = v.run_ahead(body)
        if ahead is None:
            raise InvalidArgument("workflow_task is required", field="workflow_task")
        if await self.bad_upserts(ns, ahead["commands"]) is not None:
            # Not taken: the timer fires as usual and the task handed out fails in history.
            raise InvalidArgument("workflow_task.commands upsert unknown search attributes",
                                  field="workflow_task.commands")
        return TaskAnswer("RespondTimerRunAhead", token, identity, {"timer_id": timer_id, "workflow_task": ahead})

    async def fail_workflow_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send(await self._fail_workflow_task(path, body))

    async def _fail_workflow_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "workflow")
        cause = v.optional_str(body, "cause") or "Unknown"
        failure = v.failure(body, "failure", required=False)
        identity = v.optional_str(body, "identity") or ""
        return TaskAnswer("RespondWorkflowTaskFailed", token, identity, {"cause": cause, "failure": failure})

    async def respond_query(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        query_id = v.name({}, "query_id", value=path["query_id"])
        result = v.json_text(body, "result")
        error = v.failure(body, "error", required=False)
        if result is None and error is None and "result" not in body:
            raise InvalidArgument("give either result (JSON text) or error (a Failure)", field="result")
        # Only a worker of the query's namespace and task queue may answer it (query_scope.py).
        await self.engine.respond_query(QueryScope(ns, worker_task_queues(ns)), query_id, result, error)
        return OK, {}

    # -- several answers in one call ------------------------------------------------------------

    async def answer_tasks(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        """Run each answer as its own operation would; one result per answer, in order.

        A worker finishing many tasks at once sends them together: one HTTP exchange and
        one Kafka produce request instead of one of each per task.
        """
        answers = body.get("answers")
        if not isinstance(answers, list) or not answers:
            raise InvalidArgument("answers must be a non-empty array", field="answers")
        if len(answers) > MAX_ANSWERS:
            raise InvalidArgument(f"answers holds {len(answers)} items, at most {MAX_ANSWERS} are taken",
                                  field="answers")
        # As a group: history takes them together once acknowledged, not the first alone ahead.
        with colocation.grouped_commands():
            items = [self._answer_item(i, item) for i, item in enumerate(answers)]
            if any(not isinstance(it, FrontendError) and it[0] not in _PREPARE for it in items):
                # A heartbeat answers from a read made after it is produced: each as its own call.
                results = await asyncio.gather(*(self._answer(path, query, it) for it in items))
                return OK, {"results": list(results)}
            return OK, {"results": await self._answer_together(path, items)}

    def _answer_item(self, index: int, item: Any) -> tuple[str, dict[str, Any]] | FrontendError:
        """The operation and body of ``answers[index]``, held to the operation's own schema as
        when sent alone (app.py); or what is wrong with it."""
        try:
            if not isinstance(item, dict):
                raise InvalidArgument(f"answers[{index}] must be an object", field=f"answers[{index}]")
            for key in item:
                if key not in ("operation", "body"):
                    raise InvalidArgument(f"answers[{index}].{key} is not a field of an answer (operation, body)",
                                          field=f"answers[{index}].{key}")
            operation = item.get("operation")
            if not isinstance(operation, str) or operation not in ANSWER_OPERATIONS:
                raise InvalidArgument(f"answers[{index}].operation must be one of {sorted(ANSWER_OPERATIONS)}",
                                      field=f"answers[{index}].operation")
            item_body = item.get("body")
            if not isinstance(item_body, dict):
                raise InvalidArgument(f"answers[{index}].body must be an object", field=f"answers[{index}].body")
            check_body(_answer_schemas()[operation], item_body, _components())
        except FrontendError as exc:
            return exc
        return operation, item_body

    async def _answer(self, path: Params, query: Params, item: tuple[str, dict[str, Any]] | FrontendError
                      ) -> dict[str, Any]:
        if isinstance(item, FrontendError):
            return _refused(item)
        try:
            status, answer = await getattr(self, item[0])(path, query, item[1])
        except FrontendError as exc:
            return _refused(exc)
        return {"status": status, "answer": answer}

    async def _answer_together(self, path: Params, items: list[tuple[str, dict[str, Any]] | FrontendError]
                               ) -> list[dict[str, Any]]:
        """The answers of a batch without heartbeats: each validated as its own call would be,
        then all sent as one group (Engine.respond_all), in order."""
        results: list[dict[str, Any] | None] = [None] * len(items)
        ready: list[tuple[int, TaskAnswer]] = []
        for i, item in enumerate(items):
            if isinstance(item, FrontendError):
                results[i] = _refused(item)
                continue
            try:
                ready.append((i, await getattr(self, _PREPARE[item[0]])(path, item[1])))
            except FrontendError as exc:
                results[i] = _refused(exc)
        errors = await self.engine.respond_all([answer for _, answer in ready]) if ready else []
        for (i, _), error in zip(ready, errors, strict=True):
            results[i] = {"status": OK, "answer": {}} if error is None else _refused(error)
        return [r for r in results if r is not None]

    # -- activity tasks ----------------------------------------------------------------------------

    async def poll_activity_tasks(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        req = v.poll_request(path["namespace"], path["task_queue"], body)
        return OK, await self.engine.poll_activity_tasks(req)

    async def complete_activity_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send_activity_answer(await self._complete_activity_task(path, body), body)

    async def _complete_activity_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "activity")  # its attempt checked on sending
        result = v.json_text(body, "result")
        identity = v.optional_str(body, "identity") or ""
        ahead = v.run_ahead(body)
        if ahead is not None and await self.bad_upserts(ns, ahead["commands"]) is not None:
            ahead = None  # the task goes out as usual, and its answer fails it there
        return TaskAnswer("RespondActivityTaskCompleted", token, identity, {"result": result, "workflow_task": ahead})

    async def fail_activity_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send_activity_answer(await self._fail_activity_task(path, body), body)

    async def _fail_activity_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "activity")  # its attempt checked on sending
        failure = v.failure(body, "failure", required=True)
        identity = v.optional_str(body, "identity") or ""
        details = v.json_text(body, "last_heartbeat_details")
        return TaskAnswer("RespondActivityTaskFailed", token, identity,
                          {"failure": failure, "last_heartbeat_details": details})

    async def heartbeat_activity_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        token = await self._activity_token(ns, body)
        details = v.json_text(body, "details")
        identity = v.optional_str(body, "identity") or ""
        await self.engine.respond("RecordActivityTaskHeartbeat", token, identity, details=details)
        return OK, {"cancel_requested": await self.engine.activity_cancel_requested(token)}

    async def cancel_activity_task(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        return await self._send_activity_answer(await self._cancel_activity_task(path, body), body)

    async def _cancel_activity_task(self, path: Params, body: dict[str, Any]) -> TaskAnswer:
        ns = v.namespace(path["namespace"])
        token = self._token(ns, body, "activity")  # its attempt checked on sending
        details = v.json_text(body, "details")
        identity = v.optional_str(body, "identity") or ""
        return TaskAnswer("RespondActivityTaskCanceled", token, identity, {"details": details})


PREFIX = "/api/v1/namespaces/{namespace}"

# (method, path under PREFIX, handler name = OpenAPI operationId): the one route table,
# shared by the transport and openapi.py.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/workflows", "start"),
    ("GET", "/workflows", "list_workflows"),
    ("GET", "/workflows/count", "count_workflows"),  # before /workflows/{workflow_id}: matched in order
    ("GET", "/search-attributes", "list_search_attributes"),
    ("POST", "/search-attributes", "register_search_attribute"),
    ("POST", "/workflows/{workflow_id}/signal-with-start", "signal_with_start"),
    ("POST", "/workflows/{workflow_id}/signal", "signal"),
    ("POST", "/workflows/{workflow_id}/terminate", "terminate"),
    ("POST", "/workflows/{workflow_id}/cancel", "cancel"),
    ("POST", "/workflows/{workflow_id}/reset", "reset"),
    ("POST", "/workflows/{workflow_id}/update", "update"),
    ("POST", "/workflows/{workflow_id}/query", "query"),
    ("GET", "/workflows/{workflow_id}/activities/{activity_id}/task-token", "activity_task_token"),
    ("GET", "/workflows/{workflow_id}", "describe"),
    ("GET", "/workflows/{workflow_id}/history", "history"),
    ("GET", "/workflows/{workflow_id}/result", "result"),
    ("POST", "/task-queues/{task_queue}/workflow-tasks/poll", "poll_workflow_tasks"),
    ("POST", "/workflow-tasks/complete", "complete_workflow_task"),
    ("POST", "/workflow-tasks/fail", "fail_workflow_task"),
    ("POST", "/workflow-tasks/timer-ahead", "timer_ahead_workflow_task"),
    ("POST", "/queries/{query_id}/respond", "respond_query"),
    ("POST", "/task-queues/{task_queue}/activity-tasks/poll", "poll_activity_tasks"),
    ("POST", "/activity-tasks/complete", "complete_activity_task"),
    ("POST", "/activity-tasks/fail", "fail_activity_task"),
    ("POST", "/activity-tasks/heartbeat", "heartbeat_activity_task"),
    ("POST", "/activity-tasks/cancel", "cancel_activity_task"),
    ("POST", "/task-answers", "answer_tasks"),
    ("POST", "/workflow-starts", "start_batch"),
    ("POST", "/workflow-results", "result_batch"),
]


# The operations of answer_tasks that are sent as a group (all but the heartbeat), each to the
# method validating it into the answer Engine.respond_all sends.
_PREPARE: dict[str, str] = {op: f"_{op}" for op in ("complete_workflow_task", "fail_workflow_task",
                                                     "timer_ahead_workflow_task",
                                                     "complete_activity_task", "fail_activity_task",
                                                     "cancel_activity_task")}


def _refused(exc: FrontendError) -> dict[str, Any]:
    """An item's error on its own line. A line has no headers: a 503's Retry-After (which the
    same call alone carries) is told as ``retry_after_ms``, the field a 429's body has."""
    line = {"status": exc.status, **exc.body()}
    asked = exc.headers().get("Retry-After")
    if asked is not None and "retry_after_ms" not in line:
        line["retry_after_ms"] = int(asked) * 1000
    return line


@functools.cache
def _answer_schemas() -> dict[str, Any]:
    """Each answer operation's body schema (openapi.py imports this module: looked up once, late)."""
    from .openapi import request_schema

    schemas = {op: request_schema(op) for op in ANSWER_OPERATIONS}
    assert all(s is not None for s in schemas.values())
    return schemas


@functools.cache
def _components() -> Any:
    from .openapi import COMPONENTS

    return COMPONENTS


def _items(body: dict[str, Any], key: str) -> list[Any]:
    """The items of a call that takes many, ``body[key]``: refused whole if not an array of 1
    to MAX_TOGETHER."""
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise InvalidArgument(f"{key} must be a non-empty array", field=key)
    if len(items) > MAX_TOGETHER:
        raise InvalidArgument(f"{key} holds {len(items)} items, at most {MAX_TOGETHER} are taken", field=key)
    return items


# What one item of a call sent together may fail with and be answered for on its own line,
# as the call alone would be answered (app.py): the other items go on, the answer ends whole.
_ITEM_ERRORS: tuple[type[BaseException], ...] = (FrontendError, *outage.TRANSIENT)


def _item_refused(index: int, exc: BaseException) -> dict[str, Any]:
    if not isinstance(exc, FrontendError):  # an outage (outage.TRANSIENT)
        what = "broker" if isinstance(exc, KafkaError) else "database"
        exc = Unavailable(f"the {what} is unavailable; retry later")
    return {"index": index, **_refused(exc)}


def _together(body: dict[str, Any], key: str, schema: Any, call: Callable[[dict[str, Any]], Awaitable[Answer]]
              ) -> Answer:
    """The answer of a call that runs each item of ``body[key]`` as its own call would (each
    held to ``schema``), written item by item as each is known, naming its index."""
    items = _items(body, key)

    from .openapi import COMPONENTS  # here: openapi.py imports this module

    async def one(index: int, item: Any) -> dict[str, Any]:
        try:
            if not isinstance(item, dict):
                raise InvalidArgument(f"{key}[{index}] must be an object", field=f"{key}[{index}]")
            check_body(schema, item, COMPONENTS)
            status, answer = await call(item)
        except _ITEM_ERRORS as exc:
            return _item_refused(index, exc)
        return {"index": index, "status": status, "answer": answer}

    return OK, Streamed("results", _as_ready(one, items))


async def _as_ready(call: Callable[[int, Any], Awaitable[dict[str, Any]]],
                    items: list[Any]) -> AsyncGenerator[list[dict[str, Any]], None]:
    """``call(index, item)`` for every item at once, the results in the order they finish, in
    groups: each group is every result that finished since the last one was taken. The
    calls still running are cancelled when the reader stops early (the caller went away).

    Results come in bursts (one history commit closes many runs, and their waits wake in
    the same loop turn), so a group is written as one chunk, not one write per item: at
    10,000 in flight that was 10,000 writes for a few hundred commits.
    """
    tasks = [asyncio.ensure_future(call(i, item)) for i, item in enumerate(items)]
    async with contextlib.aclosing(_tasks_as_ready(tasks, [])) as groups:
        async for group in groups:
            yield group


async def _tasks_as_ready(tasks: Sequence[asyncio.Future[dict[str, Any]]], known: list[dict[str, Any]]
                          ) -> AsyncGenerator[list[dict[str, Any]], None]:
    """``known`` (results already there) first, then the results of ``tasks`` as _as_ready
    gives them; the tasks still running are cancelled when the reader stops early."""
    ready: list[asyncio.Future[dict[str, Any]]] = []
    wake: asyncio.Event = asyncio.Event()

    def finished(task: asyncio.Future[dict[str, Any]]) -> None:
        ready.append(task)
        wake.set()

    for t in tasks:
        t.add_done_callback(finished)
    left = len(tasks)
    try:
        if known:
            yield known
        while left:
            await wake.wait()
            wake.clear()
            group, ready[:] = ready[:], []
            left -= len(group)
            yield [t.result() for t in group]
    finally:
        for t in tasks:
            t.remove_done_callback(finished)
            t.cancel()


def _a(word: str) -> str:
    """``word`` with its indefinite article ("a workflow", "an activity")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
