"""The frontend engine: one method per API operation, after validation.

Commands go to ``kadence.requests`` (acknowledged before we answer); start, signal
and terminate then wait for history's ``Reply``. Reads come from PostgreSQL. Polls go
to matching and queue the task's started record before handing it to the worker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from kadence_protocol import avro
from kadence_protocol.enums import ActivityState
from kadence_protocol.tracing import use_traceparent
from services.common import validation as common
from services.common.colocation import CommandBus, KafkaCommands
from services.common.kafka import REQUESTS, enqueue_keyed, enqueue_traced, workflow_key
from services.common.matching import (
    MatchedTask,
    MatchingClient,
    MatchingUnavailableError,
    NoPollerError,
    QueryFailedError,
    QueryScope,
    QueryTimeoutError,
    UnknownQueryError,
)
from services.common.outcome import RUNNING
from services.common.read_bound import ReadTimedOut
from services.common.telemetry import instrument_poll

from . import async_answers, oversize
from .closed import CloseWatcher
from .deadlines import SameLengthWaits
from .errors import (
    ActivityNotFound,
    Busy,
    DeadlineExceeded,
    FrontendError,
    InvalidArgument,
    NotFound,
    QueryFailed,
    RecordTooLarge,
    RequestRefused,
    Unavailable,
    WorkflowAlreadyClosed,
    WorkflowAlreadyStarted,
    WorkflowNotFound,
)
from .reads import ReadStore, describe, event_json, outcome
from .replies import ReplyRouter, Target
from .started import StartedRecords
from .tokens import TaskToken, TokenKeys
from .validation import PollRequest, StartRequest

log = logging.getLogger(__name__)

PRODUCE_TIMEOUT = 15.0
# How long a command waits for history's reply before it is answered 503 (Busy, with
# Retry-After), unless KADENCE_REPLY_TIMEOUT_MS says: with PRODUCE_TIMEOUT, a command is
# answered within the engine's answer_bound (ANSWER_BOUND by default), inside the SDK's
# shortest call timeout (45 s: a start that also waits 30 s for its outcome).
REPLY_TIMEOUT = 15.0
ANSWER_BOUND = PRODUCE_TIMEOUT + REPLY_TIMEOUT
STARTED_DELAY = 1.0  # seconds a task's started record is held back (see started.py)
# Runs an update is sent back through (UpdateInEarlierRun): each hop names the run that
# accepted it, so one is the rule; more only if that run no longer remembers the update.
_EARLIER_RUN_HOPS = 3
_ACTIVITY_CLOSED = frozenset({"ActivityTaskCompleted", "ActivityTaskFailed", "ActivityTaskCanceled",
                              "ActivityTaskTimedOut"})
_CLOSING_PAGE = 500  # events read at a time looking for an activity's closing event
_RECHECK = 5.0  # seconds between row re-reads while a result waits, in case a notify was missed
# ... doubling up to this: 10,000 waits re-read every 5 s were 2,000 reads a second, which
# slowed the runs they waited for, which made more re-reads (a collapse at 10,000 in flight).
_RECHECK_MAX = 60.0
# Seconds before a result wait reads its run again after a read gave up within its bound (the
# pool's share of result reads busy): it waits holding nothing, woken early by the close.
_LOOK_AGAIN = 1.0

T = TypeVar("T")


class Engine:
    limits = common.DEFAULT_LIMITS  # what a command may hold (the frontend sets its configured limits)

    def __init__(
        self, *, instance_id: str, producer: AIOKafkaProducer, replies: ReplyRouter, closes: CloseWatcher,
        reads: ReadStore, matching: MatchingClient, reply_timeout: float = REPLY_TIMEOUT,
        started_delay: float = STARTED_DELAY, commands: CommandBus | None = None,
        token_keys: TokenKeys,
    ) -> None:
        self.token_keys = token_keys  # signs the task tokens polls hand out
        self._instance_id = instance_id
        # Where each command goes besides the broker: history in this process, or nowhere
        # (services/common/colocation.py).
        self._commands: CommandBus = commands or KafkaCommands()
        self._started = StartedRecords(self.send_started, started_delay)
        # Every produce waits PRODUCE_TIMEOUT at most: one timer for all of them (deadlines.py).
        self._produce_waits = SameLengthWaits(PRODUCE_TIMEOUT)
        self._producer = producer
        self._replies = replies
        self._closes = closes
        self._reads = reads
        self._matching = matching
        self._reply_timeout = reply_timeout
        # Every command is answered within this of reaching the engine (docs/protocol.md).
        self.answer_bound = PRODUCE_TIMEOUT + reply_timeout
        # The waits for history's replies, all as long: one timer (deadlines.py).
        self._reply_waits = SameLengthWaits(reply_timeout)
        # Done once the frontend shuts down (end_long_waits).
        self._shutting_down: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The close futures that result waits wait on, woken by end_long_waits: waiting on
        # _shutting_down itself would put one callback per waiter on it, and removing one
        # from a list of 10,000 costs a scan of it (a quadratic cost with 10,000 in flight).
        self._result_waits: set[asyncio.Future[Any]] = set()

    def open(self) -> None:
        """Start the engine's background work (the timer of held-back started records)."""
        self._started.start()

    def end_long_waits(self) -> None:
        """The frontend is shutting down: polls answer now with no task and result waits with
        the run still running, as they would at the end of their wait; callers ask again
        (elsewhere, or here once restarted) instead of holding the shutdown up."""
        if not self._shutting_down.done():
            self._shutting_down.set_result(None)
        for fut in self._result_waits:
            if not fut.done():
                fut.set_result((False, None))  # not closed, no outcome: the wait ends as Running
        self._matching.release_polls()

    async def close(self) -> None:
        """Stop it, sending the started records still held."""
        await self._started.stop()
        self._produce_waits.close()
        self._reply_waits.close()

    # -- producing ------------------------------------------------------------------------------

    async def _produce(self, name: str, record: dict[str, Any]) -> None:
        """Produce a command to kadence.requests and wait until the broker has it."""
        await self._send(record, self._encoded(name, record), wait=True, checked=self.limits)

    def _encoded(self, name: str, record: dict[str, Any]) -> bytes:
        """The command's encoding, once it passes the very check history runs on the record:
        what history would dead-letter is a 400 here."""
        try:
            common.check_command(name, record, self.limits)
        except common.Invalid as exc:
            raise InvalidArgument(exc.message, field=exc.field) from None
        return _avro(name, record)

    def _answer_encoded(self, answer: TaskAnswer) -> tuple[dict[str, Any], bytes]:
        """A worker's answer as a record and its encoding, refitted (oversize.py) where a
        payload is over the limit: refused, the answer would only come again."""
        name, fields = answer.name, answer.fields
        for _ in range(4):  # each refit mends one field of the few an answer has
            record = _answer_record(answer.token, answer.identity, fields)
            try:
                common.check_command(name, record, self.limits)
            except common.TooLarge as exc:
                refitted = oversize.refit(name, fields, exc, self.limits)
                if refitted is None:
                    raise InvalidArgument(exc.message, field=exc.field) from None
                log.warning("%s of workflow %s (run %s): %s; sent as %s", answer.name, answer.token.workflow_id,
                            answer.token.run_id, exc.message, refitted[0])
                name, fields = refitted
                continue
            except common.Invalid as exc:
                raise InvalidArgument(exc.message, field=exc.field) from None
            return record, _avro(name, record)
        raise InvalidArgument(f"{answer.name} could not be made to fit the payload limit")

    def _hold_started(self, name: str, t: MatchedTask, identity: str, started_time: int) -> None:
        """Hold the task's started record back (see started.py): its answer may make it needless."""
        task = t.task
        self._started.hold(name, {
            "namespace": task["namespace"], "workflow_id": task["workflow_id"], "run_id": task["run_id"],
            "scheduled_event_id": task["scheduled_event_id"], "attempt": task["attempt"], "identity": identity,
            "started_time": started_time}, t.traceparent)

    async def send_started(self, name: str, record: dict[str, Any], traceparent: str | None) -> None:
        """Queue a started record without waiting for the broker's answer; a refusal is logged
        (the task's answer or its re-dispatch still settles the task)."""
        # The started record belongs to the workflow's trace, not to the worker's poll.
        with use_traceparent(traceparent):
            future = await self._send(record, avro.encode(name, record), wait=False)
        future.add_done_callback(functools.partial(_log_refused, name, record["workflow_id"]))

    async def _send(self, record: dict[str, Any], value: bytes, *, wait: bool,
                    checked: common.Limits | None = None) -> asyncio.Future[Any]:
        """Queue ``value`` on the workflow's request partition (and, with ``wait``, await the
        broker's answer) within PRODUCE_TIMEOUT; return the answer's future.

        A shared timer (deadlines.py) rather than ``asyncio.timeout``, which arms one per
        command, or ``wait_for``, which also wraps every command in a task.
        """
        try:
            async with self._produce_waits.wait():
                future = await self._enqueue(record, value, checked)
                if wait:
                    await future
        except (KafkaError, TimeoutError) as exc:
            raise _unavailable(exc) from exc
        return future

    async def _enqueue(self, record: dict[str, Any], value: bytes, checked: common.Limits | None
                       ) -> asyncio.Future[Any]:
        """Queue ``value`` on the workflow's request partition; the future of the broker's answer."""
        key = workflow_key(record["namespace"], record["workflow_id"])
        headers = self._commands.headers()
        if headers:  # traced
            partition, future, headers = await enqueue_traced(self._producer, REQUESTS, key, value, headers)
        else:
            partition, future = await enqueue_keyed(self._producer, REQUESTS, key, value)
        self._commands.queued(partition, key, value, headers, future, checked)
        return future

    async def _command(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Produce a command that history answers on kadence.replies; return the Reply."""
        request_id = record.get("request_id") or uuid.uuid4().hex
        record = {**record, "request_id": request_id, "reply_to": self._instance_id}
        waiter = self._replies.expect(request_id, Target(record["namespace"], record["workflow_id"]))
        try:
            await self._produce(name, record)
        except BaseException:
            self._replies.forget(request_id, waiter)
            raise
        return await self._reply(name, QueuedCommand(request_id, waiter))

    async def _reply(self, name: str, queued: QueuedCommand) -> dict[str, Any]:
        """History's answer to a queued command (``_command``'s, or one of a ``start_all``
        group's), its reply deadline sharing one timer with the others' (deadlines.py)."""
        try:
            async with self._reply_waits.wait():
                reply = await queued.waiter
        except TimeoutError:
            raise Busy(
                f"history did not answer {name} (request_id {queued.request_id}) within {self._reply_timeout:g} s;"
                " it may still be applied: retry with the same request_id"
            ) from None
        finally:
            self._replies.forget(queued.request_id, queued.waiter)
        return _answered(name, reply)

    def forget(self, queued: QueuedCommand) -> None:
        """Stop waiting for a queued command's reply (its caller went away)."""
        self._replies.forget(queued.request_id, queued.waiter)

    async def _produce_all(self, commands: Sequence[tuple[dict[str, Any], bytes]]
                           ) -> list[Unavailable | RecordTooLarge | None]:
        """Queue each (record, encoding) of ``commands`` in order under one produce wait and
        await the broker's answers together; per command None, or its own refusal (the
        broker's error, or the wait running out before the broker answered it)."""
        errors: list[Unavailable | RecordTooLarge | None] = [None] * len(commands)
        queued: list[tuple[int, asyncio.Future[Any]]] = []
        try:
            async with self._produce_waits.wait():
                for i, (record, value) in enumerate(commands):
                    try:
                        queued.append((i, await self._enqueue(record, value, self.limits)))
                    except KafkaError as exc:
                        errors[i] = _unavailable(exc)
                for i, future in queued:
                    try:
                        await future
                    except KafkaError as exc:
                        errors[i] = _unavailable(exc)
        except TimeoutError as exc:
            # As each command's own wait would have: the ones the broker has not answered yet
            # are given up (their futures cancelled, as an expired await cancels) and refused.
            taken = {i for i, _ in queued}
            for i in range(len(commands)):
                if i not in taken and errors[i] is None:
                    errors[i] = _unavailable(exc)
            for i, future in queued:
                if errors[i] is None and (not future.done() or future.cancelled() or future.exception()):
                    future.cancel()
                    errors[i] = _unavailable(exc)
        return errors

    # -- workflow commands ---------------------------------------------------------------------

    def _start_record(self, req: StartRequest) -> dict[str, Any]:
        return {
            "namespace": req.namespace, "workflow_id": req.workflow_id, "workflow_type": req.workflow_type,
            "task_queue": req.task_queue, "input": req.input, "execution_timeout_ms": req.execution_timeout_ms,
            "workflow_task_timeout_ms": req.workflow_task_timeout_ms, "request_id": req.request_id,
            "identity": req.identity, "run_timeout_ms": req.run_timeout_ms,
            "id_reuse_policy": req.id_reuse_policy, "id_conflict_policy": req.id_conflict_policy, "memo": req.memo,
            "retry_policy": req.retry_policy,
        }

    async def start(self, req: StartRequest, wait_seconds: float = 0.0) -> dict[str, Any]:
        """Start a run; with ``wait_seconds``, also wait for its outcome until that long after
        the call began (the start's own time counts: the answer comes within
        max(wait_seconds, answer_bound))."""
        began = asyncio.get_running_loop().time()
        record = {**self._start_record(req), "search_attributes": req.search_attributes}
        reply = await self._command("StartWorkflowExecution", record)
        return await self._started_run(req, reply, wait_seconds, began)

    async def start_all(self, reqs: Sequence[StartRequest]) -> list[QueuedCommand | FrontendError]:
        """``start`` each of ``reqs`` (a client's batch) up to the broker's acknowledgement,
        as one group: each checked and encoded on its own (a refusal is that start's error,
        in its place in the list), all queued in order under one produce wait, the broker's
        answers awaited together. Each start queued is then finished by ``finish_start``, which waits for
        history's reply (and, with a wait, the outcome) as ``start`` does."""
        name = "StartWorkflowExecution"
        out: list[QueuedCommand | FrontendError | None] = [None] * len(reqs)
        encoded: list[tuple[int, dict[str, Any], bytes]] = []
        for i, req in enumerate(reqs):
            record = {**self._start_record(req), "search_attributes": req.search_attributes}
            record["request_id"] = record["request_id"] or uuid.uuid4().hex
            record["reply_to"] = self._instance_id
            try:
                encoded.append((i, record, self._encoded(name, record)))
            except InvalidArgument as exc:
                out[i] = exc
        # Registered before anything is produced, so no reply can be missed.
        waiters = [self._replies.expect(record["request_id"], Target(record["namespace"], record["workflow_id"]))
                   for _, record, _ in encoded]
        try:
            # Not grouped_commands, as answers are: a co-located history may take the first
            # start ahead of its acknowledgement (the timer benchmark woke later with a group).
            errors = await self._produce_all([(record, value) for _, record, value in encoded])
        except BaseException:
            for (_, record, _), waiter in zip(encoded, waiters, strict=True):
                self._replies.forget(record["request_id"], waiter)
            raise
        for (i, record, _), waiter, error in zip(encoded, waiters, errors, strict=True):
            if error is None:
                out[i] = QueuedCommand(record["request_id"], waiter)
            else:
                self._replies.forget(record["request_id"], waiter)
                out[i] = error
        return [o for o in out if o is not None]

    async def finish_start(self, req: StartRequest, queued: QueuedCommand, wait_seconds: float = 0.0,
                           began: float | None = None) -> dict[str, Any]:
        """The answer ``start`` gives, for a start ``start_all`` queued (``began``: the loop
        time the batch's call began, from which its wait counts; None: now)."""
        if began is None:
            began = asyncio.get_running_loop().time()
        reply = await self._reply("StartWorkflowExecution", queued)
        return await self._started_run(req, reply, wait_seconds, began)

    async def _started_run(self, req: StartRequest, reply: dict[str, Any], wait_seconds: float,
                           began: float) -> dict[str, Any]:
        run_id = reply.get("run_id")
        started = {"run_id": run_id, "workflow_id": req.workflow_id}
        if wait_seconds > 0 and run_id:
            # What is left of the wait once history has answered: a slow start must not hold
            # the caller for its own time plus the whole wait, past the caller's timeout.
            left = wait_seconds - (asyncio.get_running_loop().time() - began)
            if left <= 0:
                started["outcome"] = {"status": "Running"}  # the caller asks for the outcome again
            else:
                started["outcome"] = await self.result(req.namespace, req.workflow_id, str(run_id), left,
                                                       just_started=bool(reply.get("created")))
        return started

    async def signal_with_start(self, req: StartRequest, signal_name: str, signal_input: str | None) -> dict[str, Any]:
        record = {**self._start_record(req), "signal_name": signal_name, "signal_input": signal_input,
                  "search_attributes": req.search_attributes}
        del record["id_conflict_policy"]  # a running run is signalled: no conflict
        del record["retry_policy"]  # signal-with-start carries no retry policy (its record has none)
        reply = await self._command("SignalWithStartWorkflowExecution", record)
        return {"run_id": reply.get("run_id")}

    async def signal(self, ns: str, workflow_id: str, run_id: str | None, signal_name: str,
                     input_json: str | None, request_id: str, identity: str) -> dict[str, Any]:
        await self._command("SignalWorkflowExecution", {
            "namespace": ns, "workflow_id": workflow_id, "run_id": run_id, "signal_name": signal_name,
            "input": input_json, "request_id": request_id, "identity": identity,
        })
        return {}

    async def terminate(self, ns: str, workflow_id: str, run_id: str | None, reason: str,
                        request_id: str, identity: str) -> dict[str, Any]:
        await self._command("TerminateWorkflowExecution", {
            "namespace": ns, "workflow_id": workflow_id, "run_id": run_id, "reason": reason,
            "request_id": request_id, "identity": identity,
        })
        return {}

    async def cancel(self, ns: str, workflow_id: str, run_id: str | None, reason: str,
                     request_id: str, identity: str) -> dict[str, Any]:
        """A run that closed already is not found, its message saying how it closed: the
        answer of a signal or a terminate of it, and Temporal's (decision 0022)."""
        try:
            await self._command("RequestCancelWorkflowExecution", {
                "namespace": ns, "workflow_id": workflow_id, "run_id": run_id, "reason": reason,
                "request_id": request_id, "identity": identity,
            })
        except WorkflowAlreadyClosed as exc:  # history's refusal (its reply over Kafka keeps the name)
            raise WorkflowNotFound(exc.message, field="workflow_id") from None
        return {}

    async def reset(self, ns: str, workflow_id: str, run_id: str | None, reset_point: str, event_id: int,
                    reapply_signals: bool, reason: str, request_id: str, identity: str) -> dict[str, Any]:
        """Reset the run (services/history/reset.py); the answer names the new run. A reset
        point history cannot reset to is a 400 (InvalidResetPoint) naming why."""
        reply = await self._command("ResetWorkflowExecution", {
            "namespace": ns, "workflow_id": workflow_id, "run_id": run_id, "reset_point": reset_point,
            "event_id": event_id, "reapply_signals": reapply_signals, "reason": reason,
            "request_id": request_id, "identity": identity,
        })
        return {"run_id": reply.get("run_id")}

    async def update(self, ns: str, workflow_id: str, run_id: str | None, update_id: str, update_name: str,
                     input_json: str | None, wait_for_stage: str, wait_seconds: float, request_id: str,
                     identity: str) -> dict[str, Any]:
        """Ask the run to run an update and wait up to ``wait_seconds`` for the stage
        ``wait_for_stage`` (accepted or completed). The answer names the stage reached:
        ``requested`` when the wait ran out first (asking again with the same update id
        waits again and never runs the update twice), ``rejected`` with the validator's
        failure, ``accepted``, or ``completed`` with the handler's result or failure; and
        the run that answered (``run_id``; null when the wait ran out on the current run).
        An update id a run continued from accepted is asked of that run (history names it)."""
        deadline = asyncio.get_running_loop().time() + wait_seconds
        hops = 0
        while True:
            reply = await self._ask_update(ns, workflow_id, run_id, update_id, update_name, input_json,
                                           wait_for_stage, request_id, identity, deadline)
            if reply is None:
                return {"update_id": update_id, "stage": "requested", "run_id": run_id}
            if (reply.get("ok") or reply.get("error_type") != "UpdateInEarlierRun" or not reply.get("run_id")
                    or hops == _EARLIER_RUN_HOPS):
                break
            hops += 1
            run_id, request_id = str(reply["run_id"]), ""  # a new request id routes the next reply
        if not reply.get("ok"):
            error, message = str(reply.get("error_type") or ""), str(reply.get("error_message") or "")
            if error == "WorkflowNotFound":
                raise WorkflowNotFound(message or "the workflow was not found", field="workflow_id")
            if error == "WorkflowClosed":
                raise WorkflowAlreadyClosed(message, field="run_id", run_id=reply.get("run_id"))
            raise RequestRefused(error, message or "history refused the update")
        answer: dict[str, Any] = json.loads(reply.get("update_outcome") or "{}")
        return {"update_id": update_id, "stage": answer.get("stage", "requested"), "result": answer.get("result"),
                "failure": answer.get("failure"), "run_id": answer.get("run_id", run_id)}

    async def _ask_update(self, ns: str, workflow_id: str, run_id: str | None, update_id: str, update_name: str,
                          input_json: str | None, wait_for_stage: str, request_id: str, identity: str,
                          deadline: float) -> dict[str, Any] | None:
        """One UpdateWorkflowExecution and its reply, or None when ``deadline`` passes first."""
        request_id = request_id or uuid.uuid4().hex  # routes the reply; dedupe is by update id
        record = {"namespace": ns, "workflow_id": workflow_id, "run_id": run_id, "update_id": update_id,
                  "update_name": update_name, "input": input_json, "wait_for_stage": wait_for_stage,
                  "request_id": request_id, "identity": identity, "reply_to": self._instance_id}
        waiter = self._replies.expect(request_id, Target(ns, workflow_id))
        try:
            await self._produce("UpdateWorkflowExecution", record)
            try:
                async with asyncio.timeout_at(deadline):
                    reply: dict[str, Any] = await asyncio.shield(waiter)
                    return reply
            except TimeoutError:
                return None
        finally:
            self._replies.forget(request_id, waiter)

    async def activity_cancel_requested(self, token: TaskToken) -> bool:
        """What a heartbeat answers: whether the attempt should stop. It should when a cancel
        of the activity is recorded, and when the attempt is over anyway (the run closed, the
        activity finished, or another attempt replaced it), as Temporal's heartbeat says."""
        act = await self._current_attempt(token)
        return act is None or bool(act.get("cancel_requested_event_id"))

    async def check_activity_attempt(self, token: TaskToken) -> None:
        """NotFound unless ``token``'s attempt is still the activity's running one: an answer
        asked to be checked (an async completion's, docs/protocol.md) is refused rather than
        dropped by history when it comes too late. History still drops one the attempt's
        end overtakes after this read."""
        if await self._current_attempt(token, running=True) is None:
            raise ActivityNotFound(f"activity attempt {token.attempt} (scheduled event {token.scheduled_event_id})"
                                   f" of run {token.run_id} is not running: it finished, timed out or was"
                                   " retried, or its run closed (a stale task token)", field="task_token")

    async def activity_answer_taken(self, answer: TaskAnswer) -> bool:
        """Whether ``answer``'s attempt, found not running, ended with this very answer: a
        retry whose first try was taken and its answer lost (async_answers.py), answered ok
        rather than refused as stale."""
        token = answer.token
        try:
            ex = await self._reads.execution(token.namespace, token.workflow_id, token.run_id)
        except WorkflowNotFound:
            return False
        sid = token.scheduled_event_id
        pending = (ex.summary.get("activities") or {}).get(str(sid))
        if isinstance(pending, dict):
            return async_answers.retried_alike(answer.name, answer.fields, pending, token.attempt)
        closing = await self._closing_event(token.run_id, sid)
        if closing is None:
            return False
        started_id = int((closing.get("attributes") or {}).get("started_event_id") or 0)
        started = await self._reads.events(token.run_id, started_id, started_id, 1) if started_id else []
        started_attempt = int((started[0].get("attributes") or {}).get("attempt") or 0) if started else 0
        return async_answers.closed_alike(answer.name, answer.identity, answer.fields, closing, started_attempt,
                                          token.attempt)

    async def _closing_event(self, run_id: str, scheduled_event_id: int) -> dict[str, Any] | None:
        """The event that closed activity ``scheduled_event_id`` of the run, if any, read a
        page at a time from its scheduling on."""
        first = scheduled_event_id + 1
        while True:
            events = await self._reads.events(run_id, first, None, _CLOSING_PAGE)
            for event in events:
                a = event.get("attributes") or {}
                if event.get("event_type") in _ACTIVITY_CLOSED and a.get("scheduled_event_id") == scheduled_event_id:
                    return event
            if len(events) < _CLOSING_PAGE:
                return None
            first = int(events[-1]["event_id"]) + 1

    async def activity_task_token(self, ns: str, workflow_id: str, run_id: str | None, activity_id: str) -> TaskToken:
        """The token of the running attempt of the activity ``activity_id`` of the run (the
        latest when ``run_id`` is None): what an async completion by ids answers with.
        ActivityNotFound when the run is closed or has no such activity running."""
        ex = await self._reads.execution(ns, workflow_id, run_id)
        if not ex.closed:
            for sid, act in (ex.summary.get("activities") or {}).items():
                if isinstance(act, dict) and act.get("activity_id") == activity_id and not _backing_off(act):
                    return TaskToken(ns, workflow_id, ex.run_id, int(sid), int(act["attempt"]), "activity",
                                     int(act.get("started_time") or 0), str(act.get("task_queue") or ""))
        raise no_running_activity(ex.run_id, workflow_id, activity_id)

    async def _current_attempt(self, token: TaskToken, *, running: bool = False) -> dict[str, Any] | None:
        """The activity's summary when ``token``'s attempt is its current one, else None;
        ``running``: None too while that attempt waits out its retry backoff (an async
        completion's check; a worker's heartbeat is not told to stop by this frontend's clock)."""
        try:
            ex = await self._reads.execution(token.namespace, token.workflow_id, token.run_id)
        except WorkflowNotFound:
            return None
        if ex.closed:
            return None
        act = (ex.summary.get("activities") or {}).get(str(token.scheduled_event_id))
        if not isinstance(act, dict) or act.get("attempt") != token.attempt or (running and _backing_off(act)):
            return None
        return act

    async def query(self, ns: str, workflow_id: str, run_id: str | None, query_type: str,
                    args_json: str | None, timeout: float) -> dict[str, Any]:
        ex = await self._reads.execution(ns, workflow_id, run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A run whose first workflow task has not completed has no state a worker could
        # answer from; hold the query until it has (as Temporal does), within its timeout.
        while (not ex.closed and not ex.summary.get("first_task_completed", True)
               and loop.time() < deadline):
            await asyncio.sleep(0.05)
            ex = await self._reads.execution(ns, workflow_id, ex.run_id)
        if not ex.closed and not ex.summary.get("first_task_completed", True):
            # Say why, rather than asking matching with no time left ("within 0 s").
            raise DeadlineExceeded(
                f"the run's first workflow task has not completed within {timeout:g} s (no worker"
                f" has run it yet on task queue {ex.task_queue!r}), so no worker can answer the query")
        try:
            result = await self._matching.query(ns, ex.task_queue, workflow_id, ex.run_id, query_type,
                                                args_json, max(0.0, deadline - loop.time()),
                                                workflow_type=ex.workflow_type)
        except QueryFailedError as exc:
            raise QueryFailed(str(exc), failure=exc.failure) from None
        except (NoPollerError, QueryTimeoutError) as exc:
            raise DeadlineExceeded(str(exc)) from None
        except MatchingUnavailableError as exc:
            raise Unavailable(str(exc)) from None
        return {"result": result}

    async def respond_query(self, scope: QueryScope, query_id: str, result: str | None,
                            failure: dict[str, Any] | None) -> None:
        """Matching takes the answer only from ``scope``; from anywhere else it is NotFound, as an
        id never issued (query_scope.py)."""
        try:
            await self._matching.respond_query(query_id, result, failure, scope=scope)
        except UnknownQueryError as exc:
            raise NotFound(str(exc), field="query_id") from None
        except MatchingUnavailableError as exc:
            raise Unavailable(str(exc)) from None

    # -- reads -------------------------------------------------------------------------------------

    async def describe(self, ns: str, workflow_id: str, run_id: str | None) -> dict[str, Any]:
        ex = await self._reads.execution(ns, workflow_id, run_id)
        return {**describe(ex), "reset_to_run_ids": await self._reads.reset_runs(ns, workflow_id, ex.run_id)}

    async def history(self, ns: str, workflow_id: str, run_id: str | None, page_size: int,
                      token: str | None) -> dict[str, Any]:
        first = 1
        if token:
            token_run, first = _decode_page_token(token)
            run_id = run_id or token_run
            if token_run != run_id:
                raise InvalidArgument("next_page_token belongs to another run", field="next_page_token")
        ex, events = await self._reads.history_page(ns, workflow_id, run_id, first, page_size + 1)
        next_token = None
        if len(events) > page_size:
            events = events[:page_size]
            next_token = _encode_page_token(ex.run_id, int(events[-1]["event_id"]) + 1)
        return {"run_id": ex.run_id, "events": events, "next_page_token": next_token}

    async def result(self, ns: str, workflow_id: str, run_id: str | None, wait_seconds: float, *,
                     just_started: bool = False) -> dict[str, Any]:
        """The run's outcome, waiting up to ``wait_seconds`` for it to close.

        ``just_started``: the run was started by the command this frontend has just had
        answered (not found running by a retried start), so a close can only come later and
        the close watcher hears of it (it remembers recent closes): the first look at the
        run's status is skipped.
        """
        if wait_seconds <= 0:
            return outcome(await self._reads.execution(ns, workflow_id, run_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        if not run_id:
            ex = await self._read_within(lambda: self._reads.waited_execution(ns, workflow_id, None), deadline)
            if ex.closed:
                return outcome(ex)
            run_id = ex.run_id
        look = not just_started
        seen = just_started  # a look (or the start's own reply) found the run open
        recheck = _RECHECK
        while True:
            fut = self._closes.watch(run_id)
            try:
                # Read after watching: a close between the two is not missed. Only the
                # status column is read until the run has closed (or is not there).
                failed: ReadTimedOut | None = None
                if look and not fut.done():
                    try:
                        status = await self._reads.status(ns, workflow_id, run_id)
                    except ReadTimedOut as exc:
                        # The wait holds no connection while it waits: it looks again soon
                        # (or is woken by the close) instead of answering 503 with time left.
                        failed = exc
                    else:
                        if status != RUNNING:
                            break
                        seen = True
                look = True
                remaining = deadline - loop.time()
                if remaining <= 0 or self._shutting_down.done():
                    if failed is not None and not seen:
                        raise failed  # never saw the run open: Running would be a guess
                    return {"status": "Running"}
                self._result_waits.add(fut)
                try:
                    # Awaited directly, so a close wakes the wait in one loop turn (asyncio.wait
                    # takes two); the timeout cancels the future, which is then not an answer.
                    async with asyncio.timeout(min(remaining, recheck if failed is None else _LOOK_AGAIN)):
                        await fut
                except TimeoutError:
                    pass
                finally:
                    self._result_waits.discard(fut)
                if failed is None:
                    recheck = min(recheck * 2, _RECHECK_MAX)
                if fut.done() and not fut.cancelled():
                    closed, answer = fut.result()
                    if answer is not None:
                        return answer  # the close notification carried the outcome
                    if closed:
                        break  # the run closed: no need to look at its status again
            finally:
                self._closes.unwatch(run_id, fut)
        return outcome(await self._read_within(lambda: self._reads.waited_execution(ns, workflow_id, run_id),
                                               deadline))

    async def _read_within(self, read: Callable[[], Awaitable[T]], deadline: float) -> T:
        """``read()``, tried again after a pause while it gives up (ReadTimedOut: no slot or
        connection of the pool, or no answer, within the read bound) and a result wait has
        time left before ``deadline``; the last failure is raised once it has none."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await read()
            except ReadTimedOut:
                pause = min(_LOOK_AGAIN, deadline - loop.time())
                if pause <= 0 or self._shutting_down.done():
                    raise
            await asyncio.sleep(pause)

    # -- task polls ----------------------------------------------------------------------------------

    @instrument_poll
    async def _poll(self, req: PollRequest, kind: str) -> list[MatchedTask]:
        return await self._matching.poll(req.namespace, req.task_queue, kind, req.max_tasks,
                                         req.wait_seconds, req.identity)

    async def poll_workflow_tasks(self, req: PollRequest) -> dict[str, Any]:
        tasks = await self._poll(req, "workflow")
        # The answer is built without yielding to the loop unless some task's events must be
        # read from PostgreSQL: the worker waits for it, the loop's other work can wait.
        events = [_carried_events(t) for t in tasks]
        unread = [i for i, (t, e) in enumerate(zip(tasks, events, strict=True)) if e is None and t.kind != "query"]
        if unread:
            read = await asyncio.gather(*(self._read_events(tasks[i]) for i in unread))
            for i, e in zip(unread, read, strict=True):
                events[i] = e
        answer = [self._workflow_task(t, req.identity, e or ()) for t, e in zip(tasks, events, strict=True)]
        # The update requests waiting in each run, read as the task is handed out: one that
        # arrives later goes with the run's next task (history owes it one).
        # A task history here handed straight to this poll carries them as of its commit.
        waiting = [i for i, t in enumerate(tasks) if t.kind != "query" and t.updates is None]
        for i, t in enumerate(tasks):
            if t.updates is not None:
                answer[i]["updates"] = _brought(t.updates, t.task)
        if waiting:
            # One query for the whole answer, not one per task (3.7 % of the server's CPU).
            found = await self._reads.update_requests_of([tasks[i].task["run_id"] for i in waiting])
            for i in waiting:
                answer[i]["updates"] = _brought(found.get(tasks[i].task["run_id"], []), tasks[i].task)
        return {"tasks": answer}

    async def _read_events(self, t: MatchedTask) -> Sequence[Mapping[str, Any]]:
        task = t.task
        first, last = int(task.get("first_event_id", 1)), int(task["scheduled_event_id"])
        return await self._reads.events(task["run_id"], first, last, max(1, last - first + 1))

    def _workflow_task(self, t: MatchedTask, identity: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        task = t.task
        if t.kind == "query":
            token = TaskToken(task["namespace"], task["workflow_id"], task["run_id"], 0, 0, "query")
            return {
                "task_token": token.encode(self.token_keys), "workflow_id": task["workflow_id"],
                "run_id": task["run_id"], "workflow_type": task.get("workflow_type", ""), "scheduled_event_id": 0,
                "attempt": 0, "events": [],
                "query": {"query_id": task["query_id"], "query_type": task["query_type"], "args": task["args"]},
                "traceparent": t.traceparent,
            }
        # workflow.now() while the task runs, recorded with its start so that a replay agrees.
        started_time = int(time.time() * 1000)
        self._hold_started("RecordWorkflowTaskStarted", t, identity, started_time)
        last = int(task["scheduled_event_id"])
        token = TaskToken(task["namespace"], task["workflow_id"], task["run_id"], last, task["attempt"], "workflow",
                          started_time, task.get("task_queue", ""))
        return {
            "task_token": token.encode(self.token_keys), "workflow_id": task["workflow_id"], "run_id": task["run_id"],
            "workflow_type": task["workflow_type"], "scheduled_event_id": last, "attempt": task["attempt"],
            "started_time": started_time, "events": events, "traceparent": t.traceparent,
        }

    async def poll_activity_tasks(self, req: PollRequest) -> dict[str, Any]:
        tasks = await self._poll(req, "activity")
        return {"tasks": [self._activity_task(t, req.identity) for t in tasks]}

    def _activity_task(self, t: MatchedTask, identity: str) -> dict[str, Any]:
        task = t.task
        started_time = int(time.time() * 1000)
        self._hold_started("RecordActivityTaskStarted", t, identity, started_time)
        token = TaskToken(task["namespace"], task["workflow_id"], task["run_id"], task["scheduled_event_id"],
                          task["attempt"], "activity", started_time, task.get("task_queue", ""))
        fields = ("workflow_id", "run_id", "workflow_type", "activity_id", "activity_type", "input", "attempt",
                  "scheduled_event_id", "schedule_to_close_timeout_ms", "start_to_close_timeout_ms",
                  "heartbeat_timeout_ms", "heartbeat_details", "scheduled_time")
        return {"task_token": token.encode(self.token_keys), **{f: task.get(f) for f in fields},
                "traceparent": t.traceparent}

    # -- task answers --------------------------------------------------------------------------------

    async def respond(self, name: str, token: TaskToken, identity: str, **fields: Any) -> None:
        """Send a worker's answer (or heartbeat); it implies the task's start, so a started
        record still held for the task is dropped."""
        refused = (await self.respond_all([TaskAnswer(name, token, identity, fields)]))[0]
        if refused is not None:
            raise refused

    async def respond_all(self, answers: Sequence[TaskAnswer]) -> list[FrontendError | None]:
        """``respond`` to each of ``answers`` (a worker's batch), as one group: each is checked
        and encoded on its own (a refusal is that answer's error, in its place in the list),
        all are queued in order under one produce wait, and the broker's answers are awaited
        together. One call instead of one task, wait and loop turn per answer."""
        errors: list[FrontendError | None] = [None] * len(answers)
        encoded: list[tuple[int, dict[str, Any], bytes]] = []
        for i, answer in enumerate(answers):
            token = answer.token
            self._started.settled((token.run_id, token.scheduled_event_id, token.attempt))
            try:
                record, value = self._answer_encoded(answer)
            except InvalidArgument as exc:
                errors[i] = exc
            else:
                encoded.append((i, record, value))
        refusals = await self._produce_all([(record, value) for _, record, value in encoded])
        for (i, _, _), refusal in zip(encoded, refusals, strict=True):
            errors[i] = refusal
        if any(r is None for r in refusals):
            # The workflow waits for what the acknowledgement sets off, nobody for this call's
            # HTTP answer: let it go first. In one process the shard loop sends its commit (one
            # loop turn); between processes the command notice to history leaves, after the
            # turn its sender takes to gather the produce batch's acknowledgements (two).
            for _ in range(1 if self._commands.colocated else 2):
                await asyncio.sleep(0)
        return errors


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """A command the broker has taken whose reply from history is awaited (``start_all``):
    its request id and the future the reply comes to."""

    request_id: str
    waiter: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    """A worker's answer to a task, validated and ready to send (``Engine.respond_all``):
    the command's name, the verified token, and the command's own fields."""

    name: str
    token: TaskToken
    identity: str
    fields: dict[str, Any]


def _avro(name: str, record: dict[str, Any]) -> bytes:
    try:
        return avro.encode(name, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"the request does not fit {name}: {exc}") from None


def _answer_record(token: TaskToken, identity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"namespace": token.namespace, "workflow_id": token.workflow_id, "run_id": token.run_id,
            "scheduled_event_id": token.scheduled_event_id, "attempt": token.attempt, "identity": identity,
            **fields}


def _answered(name: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The reply if history did what was asked; otherwise its refusal, raised."""
    if reply.get("ok"):
        return reply
    error, message = str(reply.get("error_type") or ""), str(reply.get("error_message") or "")
    if error == "WorkflowAlreadyStarted":
        raise WorkflowAlreadyStarted(message or "the workflow is already running",
                                     field="workflow_id", run_id=reply.get("run_id"))
    if error == "WorkflowNotFound":
        raise WorkflowNotFound(message or "the workflow was not found", field="workflow_id")
    if error == "WorkflowAlreadyClosed":
        raise WorkflowAlreadyClosed(message, field="run_id", run_id=reply.get("run_id"))
    raise RequestRefused(error, message or f"history refused {name}")


def _unavailable(exc: BaseException) -> Unavailable | RecordTooLarge:
    if isinstance(exc, MessageSizeTooLargeError):  # the producer's or the broker's limit: for good
        return RecordTooLarge(f"the command's record is larger than the broker takes (1 MiB by default; its"
                              f" arguments, memo and ids together): {exc}")
    return Unavailable(f"the broker did not accept the request: {exc!r}")


def _brought(updates: Sequence[Mapping[str, Any]], task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The update requests a workflow task brings: those that arrived before any event it does
    not bring (services/history/summary.py, ``after_event_id``); the rest go with the next."""
    if not updates:
        return []  # most tasks (history hands none for a run with no request waiting)
    upto = int(task["scheduled_event_id"])
    return [{"update_id": u["update_id"], "name": u["name"], "input": u["input"]}
            for u in updates if int(u.get("after_event_id") or 0) <= upto]


def _carried_events(t: MatchedTask) -> Sequence[Mapping[str, Any]] | None:
    """A workflow task's events as the task brought them; None if they must be read (or it is
    a query)."""
    if t.events is not None:
        return t.events  # handed over by history in this process, still decoded
    carried = t.task.get("events")
    return None if carried is None else [event_json(data) for data in carried]


def _log_refused(name: str, workflow_id: str, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("the broker refused %s of %s (%r); the task's answer or timeout settles it",
                    name, workflow_id, exc)


def _encode_page_token(run_id: str, next_event_id: int) -> str:
    raw = json.dumps({"run_id": run_id, "next_event_id": next_event_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        run_id, first = data["run_id"], data["next_event_id"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidArgument("next_page_token is not a token this API returned", field="next_page_token") from None
    # Forged, a run id PostgreSQL's text refuses or an event id past 64 bits reached it (a 500).
    if not isinstance(run_id, str) or type(first) is not int or not 1 <= first < 2**63:
        raise InvalidArgument("next_page_token is not a token this API returned", field="next_page_token")
    try:
        common.optional_name(run_id, "next_page_token")
    except common.Invalid:
        raise InvalidArgument("next_page_token is not a token this API returned", field="next_page_token") from None
    return run_id, first


def no_running_activity(run_id: str, workflow_id: str, activity_id: str) -> ActivityNotFound:
    """What a by-ids token request answers when no attempt of the activity runs; also what a
    caller that may not poll the activity's task queue is told, word for word, so that it
    cannot tell an activity it may not see from one that does not exist."""
    return ActivityNotFound(f"run {run_id} of workflow {workflow_id!r} has no activity {activity_id!r} running"
                            " (it finished, waits out a retry backoff, or the run closed)", field="activity_id")


def _backing_off(act: Mapping[str, Any]) -> bool:
    """Whether an activity of a run's summary waits out its retry backoff (history's
    engine.backing_off, by this frontend's clock): no attempt of it runs, so none is answered."""
    return (act.get("state") == ActivityState.SCHEDULED
            and int(act.get("scheduled_time") or 0) > time.time() * 1000)
