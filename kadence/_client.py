"""The client: start, signal, query, describe, terminate workflows and wait for results."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, overload

from kadence._admin import AdminMixin
from kadence._async_activity import AsyncActivityHandle
from kadence._http import HttpTransport, StreamingTransport, Transport, extra_headers, path_segment
from kadence._retry import Backoff, outage_pause, retrying, unavailable_or_throttled
from kadence._together import THROTTLED_WITHIN_S, Batcher
from kadence._tracing_interceptor import TracingInterceptor
from kadence._visibility import (
    WorkflowExecution,
    WorkflowExecutionCount,
    count_workflows,
    list_workflows,
    search_attributes_json,
)
from kadence._workflow.definition import (
    query_name_of,
    run_result_type,
    signal_name_of,
    update_name_of,
    workflow_name_of,
)
from kadence.common import ResetPoint, RetryPolicy, WorkflowIDConflictPolicy, WorkflowIDReusePolicy, to_millis
from kadence.converter import DataConverter, decode_payload, default_converter, encode_payload, signature_of
from kadence.exceptions import (
    CanceledError,
    RPCError,
    TerminatedError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from kadence.interceptor import (
    CancelWorkflowInput,
    ClientOutboundInterceptor,
    Interceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    TerminateWorkflowInput,
    chain_client,
)
from kadence_protocol import tracing as _tracing
from kadence_protocol.queries import UPDATE_RESULT_NAME

__all__ = ["Client", "WorkflowHandle", "default_identity"]

# The calls a client sends together when several are in flight (kadence/_together.py).
_STARTS = "/workflow-starts"
_RESULTS = "/workflow-results"

_log = logging.getLogger(__name__)
_LONG_POLL_SECONDS = 30.0
_MAX_LONG_POLL_SECONDS = 600.0  # the frontend's bound on wait_seconds
# A query with its own timeout: the HTTP request waits this much longer than the server does.
QUERY_ANSWER_MARGIN_S = 15.0
#: Starts, signals, terminates and the other calls with a request id are sent again with
#: the same request id when the frontend is unreachable or answers 503/504 or 429: waits
#: from 0.2 s doubling to 2 s, jittered, or the answer's Retry-After if longer (capped at
#: the budget left), no retry starting after 30 s (a frontend restart outlasts a few
#: tries), as result waits and workers ride out an outage; but an attempt that timed out
#: earns one more try even past the 30 s (kadence._retry.retrying).
IDEMPOTENT_RETRY = Backoff(attempts=0, within=30.0, first=0.2, factor=2.0, cap=2.0)

R = TypeVar("R")


def default_identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


class Client(AdminMixin):
    """A connection to a Kadence frontend, scoped to one namespace (namespace and schedule
    operations: kadence/_admin.py)."""

    def __init__(self, transport: Transport, *, namespace: str = "default", identity: str | None = None,
                 retry: Backoff = IDEMPOTENT_RETRY, data_converter: DataConverter | None = None,
                 interceptors: Sequence[Interceptor] = (), batch_calls: bool = True,
                 long_poll_seconds: float = _LONG_POLL_SECONDS) -> None:
        """``retry`` bounds the retries of the calls idempotent by request id (starts,
        signals, cancels, terminates, resets, updates);
        ``data_converter`` converts payloads to JSON and back (and holds the payload codec);
        ``interceptors`` wrap the workflow calls (kadence.interceptor; a Worker of this
        client uses them too); ``batch_calls``: starts and result waits made while others
        are in flight go to the frontend together (kadence/_together.py), False sends each
        alone; ``long_poll_seconds``: how long one wait for a result or an update's outcome
        lasts before it is asked again (a shorter one suits a proxy that cuts idle calls)."""
        if not 0 < long_poll_seconds <= _MAX_LONG_POLL_SECONDS:
            raise ValueError(f"long_poll_seconds must be above 0 and at most {_MAX_LONG_POLL_SECONDS:g}")
        self.transport = transport
        self.long_poll_seconds = long_poll_seconds
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.retry = retry
        self.data_converter = data_converter or default_converter()
        self.interceptors: list[Interceptor] = list(interceptors)
        self.batch_calls = batch_calls
        self._batchers: dict[str, Batcher] = {}
        # The SDK's spans first (outermost), then the caller's interceptors.
        self._outbound = chain_client([TracingInterceptor(), *self.interceptors], _ClientCalls(self))

    async def _encode_args(self, args: Sequence[Any], what: str) -> list[Any]:
        """Arguments as the body carries them: a JSON array (of one marker object when a
        payload codec is set). PayloadError names the argument that cannot be converted."""
        text = self.data_converter.encode_args(args, what=what)
        encoded = await encode_payload(self.data_converter.payload_codec, text, args=True)
        value: list[Any] = json.loads(encoded or "[]")
        return value

    async def _encode_memo(self, memo: Mapping[str, Any]) -> Any:
        """The memo as the body carries it: a JSON object, through the data converter and
        the payload codec like any payload (the server only checks it is an object)."""
        text = self.data_converter.encode_value(dict(memo), what="memo")
        return json.loads(await encode_payload(self.data_converter.payload_codec, text) or "null")

    async def _decode_memo(self, memo: Any) -> Any:
        """A memo as describe returns it, with the payload codec undone (plain JSON)."""
        if not isinstance(memo, dict) or self.data_converter.payload_codec is None:
            return memo
        text = await decode_payload(self.data_converter.payload_codec, json.dumps(memo, separators=(",", ":")))
        return json.loads(text or "null")

    async def _decode_value(self, payload: Any, hint: Any, what: str) -> Any:
        text = await decode_payload(self.data_converter.payload_codec, payload if isinstance(payload, str) else None)
        return self.data_converter.decode_value(text, hint, what=what)

    def _together(self, path: str) -> Batcher | None:
        """The batcher of the current transport for the calls ``path`` takes together
        (/workflow-starts, /workflow-results; kadence/_together.py); None: they go alone."""
        if not self.batch_calls or not isinstance(self.transport, StreamingTransport) or _tracing.tracer():
            return None
        batcher = self._batchers.get(path)
        if batcher is None or batcher.transport is not self.transport:
            if path == _STARTS:
                batcher = Batcher(self.transport, self._start_alone, _STARTS, "starts",
                                  throttled_within=self.retry.within or THROTTLED_WITHIN_S)
            else:
                batcher = Batcher(self.transport, self._result_alone, _RESULTS, "waits",
                                  throttled_within=self.retry.within or THROTTLED_WITHIN_S)
            self._batchers[path] = batcher
        return batcher

    async def _start_alone(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return await self._idempotent("/workflows", body, timeout=timeout,
                                      what=f"start of workflow {body.get('workflow_id')}")

    async def _result_alone(self, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return await self.transport.call(
            "GET", f"/workflows/{path_segment(body['workflow_id'])}/result",
            params={"run_id": body.get("run_id"), "wait_seconds": body["wait_seconds"]}, timeout=timeout)

    async def _wait_result(self, workflow_id: str, run_id: str | None, wait: float,
                           timeout: float | None) -> dict[str, Any]:
        """GET .../result's answer for the run (None: the latest), waiting up to ``wait``
        seconds; sent with the other result waits in flight when there are some."""
        body = {"workflow_id": workflow_id, "run_id": run_id, "wait_seconds": wait}
        batcher = self._together(_RESULTS)
        if batcher is None:
            return await self._result_alone(body, timeout)
        return await batcher.call(body, timeout)

    async def _idempotent(self, path: str, body: Mapping[str, Any], *, timeout: float | None = None,
                          within: float | None = None, what: str) -> dict[str, Any]:
        """POST ``body`` (which holds its request id, made once per logical call), sent again
        unchanged while the frontend is unreachable or refuses it as over the namespace's limit
        (429, after its Retry-After), within ``self.retry`` and, if given, ``within`` seconds
        (a caller's own deadline)."""
        backoff = self.retry
        if within is not None:
            backoff = dataclasses.replace(backoff, within=max(0.001, min(within, backoff.within or within)))
        return await retrying(lambda: self.transport.call("POST", path, body=body, timeout=timeout),
                              backoff=backoff, retry_if=unavailable_or_throttled, what=what)

    async def _read(self, path: str, params: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        """GET ``path``: a read changes nothing, so it is sent again as a call with a request
        id is (unreachable, 503/504, 429; within ``self.retry``, waiting any Retry-After)."""
        return await retrying(lambda: self.transport.call("GET", path, params=params),
                              backoff=self.retry, retry_if=unavailable_or_throttled, what=what)

    @classmethod
    async def connect(
        cls, target: str = "http://127.0.0.1:7233", namespace: str = "default", *, identity: str | None = None,
        api_key: str | None = None,
        data_converter: DataConverter | None = None,
        interceptors: Sequence[Interceptor] = (),
        batch_calls: bool = True,
        long_poll_seconds: float = _LONG_POLL_SECONDS,
        retry: Backoff = IDEMPOTENT_RETRY,
    ) -> Client:
        """A client for the frontend at ``target`` (no request is made until first use).

        ``api_key`` (an API key or a JWT) is sent as ``Authorization: Bearer ...`` on every
        call, the worker's too; None: ``$KADENCE_API_KEY`` if set; "": none.
        ``data_converter`` turns typed values into payloads and back (and applies a payload codec).
        ``batch_calls``, ``long_poll_seconds``, ``retry``: see :class:`Client` (docs/sdk.md).
        """
        return cls(HttpTransport(target, namespace, api_key=api_key), namespace=namespace, identity=identity,
                   retry=retry, data_converter=data_converter, interceptors=interceptors, batch_calls=batch_calls,
                   long_poll_seconds=long_poll_seconds)

    @property
    def api_key(self) -> str | None:
        """The credential of this client's calls (settable, to rotate it), if it has one."""
        return getattr(self.transport, "api_key", None)

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        if not isinstance(self.transport, HttpTransport):
            raise TypeError("this client's transport takes no API key")
        self.transport.api_key = value

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start_body(
        self,
        workflow: str | type | Callable[..., Any],
        args: Sequence[Any],
        *,
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None,
        run_timeout: timedelta | None,
        workflow_task_timeout: timedelta | None,
        request_id: str | None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        id_conflict_policy: WorkflowIDConflictPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        if not id:
            raise ValueError("a workflow id is required (id=...)")
        if not task_queue:
            raise ValueError("a task queue is required (task_queue=...)")
        workflow_type = workflow_name_of(workflow)
        body: dict[str, Any] = {
            "workflow_id": id,
            "workflow_type": workflow_type,
            "task_queue": task_queue,
            # Checked here (strict JSON, no NaN), not on the server.
            "input": await self._encode_args(args, f"workflow {workflow_type}"),
            "execution_timeout_ms": to_millis(execution_timeout),
            "request_id": request_id or str(uuid.uuid4()),
            "identity": self.identity,
        }
        if run_timeout is not None:
            body["run_timeout_ms"] = to_millis(run_timeout)
        if workflow_task_timeout is not None:
            body["workflow_task_timeout_ms"] = to_millis(workflow_task_timeout)
        if id_reuse_policy is not None:
            body["id_reuse_policy"] = WorkflowIDReusePolicy(id_reuse_policy).value
        if id_conflict_policy is not None:
            body["id_conflict_policy"] = WorkflowIDConflictPolicy(id_conflict_policy).value
        if memo is not None:
            body["memo"] = await self._encode_memo(memo)
        if search_attributes:
            body["search_attributes"] = search_attributes_json(search_attributes)
        return body

    async def start_workflow(
        self,
        workflow: str | type | Callable[..., Any],
        *args: Any,
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        workflow_task_timeout: timedelta | None = None,
        request_id: str | None = None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        id_conflict_policy: WorkflowIDConflictPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        cron_schedule: str | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> WorkflowHandle:
        """Start a workflow (by ``Workflow.run``, class or type name); WorkflowAlreadyStartedError
        if one with this id is running (``id_conflict_policy`` changes that: USE_EXISTING
        returns the running run's handle, TERMINATE_EXISTING terminates it and starts anew)
        or if ``id_reuse_policy`` refuses to reuse the id of a closed run. ``memo``: a dict
        of JSON values kept with the run (describe, ``workflow.memo()``), carried over on
        continue-as-new.

        ``execution_timeout`` bounds the whole execution, every run of a continue-as-new
        chain included; ``run_timeout`` bounds each run. The run open when either passes
        times out. ``search_attributes``: custom attributes registered in the namespace
        (name: value; datetimes allowed), for listing it (README, "Finding workflows").

        ``cron_schedule`` (a cron expression, UTC): start nothing now, but create the schedule
        ``cron-{id}`` whose every firing starts a new run of workflow ``id`` (overlap skip);
        the handle follows the latest run. Stop it with ``delete_schedule("cron-" + id)``
        (README, "Schedules").

        ``retry_policy``: a run that fails or times out is retried as a new run of the same
        workflow id (``workflow.info().attempt`` counts them) until the policy's attempts are
        spent or the error type is non-retryable; the handle's ``result()`` follows the retries
        (README, "Workflow retry policy")."""
        return await self._outbound.start_workflow(StartWorkflowInput(
            workflow_name_of(workflow), args, id, task_queue, execution_timeout=execution_timeout,
            run_timeout=run_timeout, workflow_task_timeout=workflow_task_timeout, request_id=request_id,
            id_reuse_policy=id_reuse_policy, id_conflict_policy=id_conflict_policy, memo=memo,
            search_attributes=search_attributes, cron_schedule=cron_schedule, retry_policy=retry_policy,
            result_type=run_result_type(workflow)))

    async def _start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle:
        """The start itself, at the end of the interceptors' chain."""
        body = await self._start_body(
            input.workflow_type,
            input.args,
            id=input.id,
            task_queue=input.task_queue,
            execution_timeout=input.execution_timeout,
            run_timeout=input.run_timeout,
            workflow_task_timeout=input.workflow_task_timeout,
            request_id=input.request_id,
            id_reuse_policy=input.id_reuse_policy,
            id_conflict_policy=input.id_conflict_policy,
            memo=input.memo,
            search_attributes=input.search_attributes,
        )
        timeout = None
        path, what = "/workflows", f"start of workflow {input.id}"
        if input.wait_for_result:
            body["wait_seconds"] = self.long_poll_seconds
            timeout = self.long_poll_seconds + 15
        if input.start_signal is not None:
            body["signal_name"] = input.start_signal
            body["signal_input"] = await self._encode_args(input.start_signal_args, f"signal {input.start_signal}")
            path = f"/workflows/{path_segment(input.id)}/signal-with-start"
            what = f"signal-with-start of workflow {input.id}"
        if input.cron_schedule is not None:
            body["cron_schedule"] = input.cron_schedule
        if input.retry_policy is not None:
            body["retry_policy"] = input.retry_policy.to_avro()
        batcher = self._together(_STARTS) if path == "/workflows" and not input.headers else None
        if batcher is not None:
            # Sent together with the starts made meanwhile (_together.py); a traced start
            # keeps its own span and an interceptor's headers their own call.
            answer = await batcher.call(body, timeout)
        else:
            with extra_headers(input.headers):
                answer = await self._idempotent(path, body, timeout=timeout, what=what)
        run_id = answer.get("run_id")
        handle = WorkflowHandle(self, input.id, run_id=run_id, result_type=input.result_type,
                                first_execution_run_id=run_id)
        handle._first_outcome = answer.get("outcome")
        return handle

    @overload
    async def execute_workflow(
        self,
        workflow: Callable[..., Awaitable[R]],
        *args: Any,
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        workflow_task_timeout: timedelta | None = None,
        request_id: str | None = None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        id_conflict_policy: WorkflowIDConflictPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> R: ...

    @overload
    async def execute_workflow(
        self,
        workflow: str | type,
        *args: Any,
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        workflow_task_timeout: timedelta | None = None,
        request_id: str | None = None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        id_conflict_policy: WorkflowIDConflictPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> Any: ...

    async def execute_workflow(
        self,
        workflow: str | type | Callable[..., Any],
        *args: Any,
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        workflow_task_timeout: timedelta | None = None,
        request_id: str | None = None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        id_conflict_policy: WorkflowIDConflictPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> Any:
        """Start a workflow and wait for its result (WorkflowFailureError if it fails).

        One exchange with the frontend: the start asks it to wait for the outcome too; a
        run that outlasts that wait is followed as :meth:`WorkflowHandle.result` does.
        """
        handle = await self._outbound.start_workflow(StartWorkflowInput(
            workflow_name_of(workflow), args, id, task_queue, execution_timeout=execution_timeout,
            run_timeout=run_timeout, workflow_task_timeout=workflow_task_timeout, request_id=request_id,
            id_reuse_policy=id_reuse_policy, id_conflict_policy=id_conflict_policy, memo=memo,
            search_attributes=search_attributes, retry_policy=retry_policy, result_type=run_result_type(workflow),
            wait_for_result=True))
        return await handle._follow(handle._first_outcome, None, follow_runs=True)

    async def signal_with_start_workflow(
        self,
        workflow: str | type | Callable[..., Any],
        *args: Any,
        id: str,
        task_queue: str,
        signal: str | Callable[..., Any],
        signal_args: Sequence[Any] = (),
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        workflow_task_timeout: timedelta | None = None,
        request_id: str | None = None,
        id_reuse_policy: WorkflowIDReusePolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> WorkflowHandle:
        """Signal the workflow, starting it first if it is not running; ``memo`` and
        ``search_attributes`` are those of the run it starts (unused if one is open)."""
        return await self._outbound.start_workflow(StartWorkflowInput(
            workflow_name_of(workflow), args, id, task_queue, execution_timeout=execution_timeout,
            run_timeout=run_timeout, workflow_task_timeout=workflow_task_timeout, request_id=request_id,
            id_reuse_policy=id_reuse_policy, memo=memo, search_attributes=search_attributes,
            result_type=run_result_type(workflow),
            start_signal=signal_name_of(signal), start_signal_args=signal_args))

    def list_workflows(self, query: str = "", *, page_size: int = 100,
                       limit: int | None = None) -> AsyncIterator[WorkflowExecution]:
        """The runs matching ``query`` (README, "Finding workflows"), following the pages;
        RPCError (400, naming the problem) for a query that cannot run."""
        return list_workflows(self.transport, query, page_size=page_size, limit=limit)

    async def count_workflows(self, query: str = "") -> WorkflowExecutionCount:
        """How many runs match ``query``; ``... GROUP BY ExecutionStatus`` counts per status."""
        return await count_workflows(self.transport, query)

    def get_workflow_handle(self, workflow_id: str, *, run_id: str | None = None,
                            result_type: Any = None) -> WorkflowHandle:
        """A handle on an existing workflow (its latest run unless ``run_id`` is given);
        ``result()`` converts the result to ``result_type`` (plain JSON when None)."""
        return WorkflowHandle(self, workflow_id, run_id=run_id, result_type=result_type)

    def get_async_activity_handle(self, *, task_token: str | None = None, workflow_id: str | None = None,
                                  run_id: str | None = None, activity_id: str | None = None) -> AsyncActivityHandle:
        """A handle to complete, fail, heartbeat or report the cancellation of an activity
        that called ``activity.raise_complete_async()``: by its ``activity.info().task_token``
        (that attempt only), or by ``workflow_id``, ``activity_id`` and optionally ``run_id``
        (whichever attempt is running at each call)."""
        return AsyncActivityHandle(self, task_token, workflow_id=workflow_id, run_id=run_id, activity_id=activity_id)



class WorkflowHandle:
    """One workflow (and optionally one run of it) as seen from the client.

    A handle ``start_workflow`` returned names the run it started (``run_id``) but, as
    Temporal's, acts on the workflow's chain: signals, queries, updates, describe, cancel and
    terminate go to the workflow id's current run (the one a continue-as-new, a retry or a
    reset made), ``result()`` follows the chain from the run started. A handle given a
    ``run_id`` by ``get_workflow_handle`` acts on that run alone.
    """

    def __init__(self, client: Client, workflow_id: str, *, run_id: str | None = None,
                 result_type: Any = None, first_execution_run_id: str | None = None) -> None:
        self.client = client
        #: What ``result()`` converts the result to (None: plain JSON).
        self.result_type = result_type
        self.workflow_id = workflow_id
        self.run_id = run_id
        #: The run that started the chain this handle acts on (set by a start; Temporal's name).
        self.first_execution_run_id = first_execution_run_id
        self._path = f"/workflows/{path_segment(workflow_id)}"
        # The outcome the start answered with (execute_workflow asks for it), if any.
        self._first_outcome: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        """The workflow id (``workflow_id``), as a child workflow's handle and Temporal name it."""
        return self.workflow_id

    @property
    def result_run_id(self) -> str | None:
        """The run ``result()`` starts from (and follows to the chain's last run)."""
        return self.run_id

    @property
    def _target_run_id(self) -> str | None:
        """The run id sent with signals, queries, updates, describe, cancel and terminate:
        none (the workflow's current run) for a start's handle, whose run may have
        continued as new, been retried or reset since."""
        return None if self.first_execution_run_id is not None else self.run_id

    def __repr__(self) -> str:
        return f"WorkflowHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    async def signal(self, signal: str | Callable[..., Any], *args: Any, request_id: str | None = None) -> None:
        await self.client._outbound.signal_workflow(SignalWorkflowInput(self, signal_name_of(signal), args,
                                                                        request_id))

    async def _signal(self, input: SignalWorkflowInput) -> None:
        name = input.signal
        body = {
            "signal_name": name,
            "input": await self.client._encode_args(input.args, f"signal {name}"),
            "run_id": self._target_run_id,
            "request_id": input.request_id or str(uuid.uuid4()),
            "identity": self.client.identity,
        }
        with extra_headers(input.headers):
            await self.client._idempotent(f"{self._path}/signal", body,
                                          what=f"signal {name} to workflow {self.workflow_id}")

    async def query(self, query: str | Callable[..., Any], *args: Any, result_type: Any = None,
                    timeout: float | timedelta | None = None) -> Any:
        """Ask a running (or closed) workflow a question; QueryFailedError if its handler fails.
        The answer is converted to the handler's return annotation (or ``result_type``).
        ``timeout`` (at most 600 s; default the server's 10 s) is how long the server waits
        for a worker's answer before answering 504 (RPCError)."""
        if result_type is None and not isinstance(query, str):
            result_type = signature_of(query, method=True).result
        return await self.client._outbound.query_workflow(QueryWorkflowInput(self, query_name_of(query), args,
                                                                             result_type, timeout=timeout))

    async def _query(self, input: QueryWorkflowInput) -> Any:
        name = input.query
        body: dict[str, Any] = {"query_type": name,
                                "args": await self.client._encode_args(input.args, f"query {name}"),
                                "run_id": self._target_run_id}
        http_timeout = None  # the transport's own
        if input.timeout is not None:
            body["timeout_ms"] = to_millis(input.timeout)
            # The HTTP request outlasts the server's wait, so that its 504 is what is seen.
            http_timeout = body["timeout_ms"] / 1000 + QUERY_ANSWER_MARGIN_S
        with extra_headers(input.headers):
            answer = await self.client.transport.call("POST", f"{self._path}/query", body=body,
                                                      timeout=http_timeout)
        return await self.client._decode_value(answer.get("result"), input.result_type, f"result of query {name}")

    async def describe(self) -> dict[str, Any]:
        """The run's state; its ``memo`` (if any) with the payload codec undone. Asked again
        through outages within the client's retry budget, as history() is."""
        # run_id always, even empty (the latest run): GET /workflows/count is otherwise the count.
        answer = await self.client._read(self._path, {"run_id": self._target_run_id or ""},
                                         what=f"describe of workflow {self.workflow_id}")
        if answer.get("memo") is not None:
            answer["memo"] = await self.client._decode_memo(answer["memo"])
        return answer

    async def terminate(self, reason: str = "", *, request_id: str | None = None) -> None:
        """End the run at once, without running workflow code (``result()`` raises
        WorkflowFailureError with a TerminatedError cause). Retried with the same
        ``request_id`` (one drawn per call if not given) through outages, it terminates
        once; a run that is closed already raises WorkflowNotFoundError (404)."""
        await self.client._outbound.terminate_workflow(TerminateWorkflowInput(self, reason, request_id))

    async def _terminate(self, input: TerminateWorkflowInput) -> None:
        body = {"reason": input.reason, "run_id": self._target_run_id,
                "request_id": input.request_id or str(uuid.uuid4()), "identity": self.client.identity}
        with extra_headers(input.headers):
            await self.client._idempotent(f"{self._path}/terminate", body,
                                          what=f"terminate of workflow {self.workflow_id}")

    async def cancel(self, reason: str = "", *, request_id: str | None = None) -> None:
        """Ask the run to cancel: its workflow code sees ``asyncio.CancelledError`` at its
        await points, may clean up, and then closes as Canceled (``result()`` raises
        WorkflowFailureError with a CanceledError cause) or goes on. Returns once history
        recorded the request; retried with the same ``request_id`` through outages. A run
        that closed already raises WorkflowNotFoundError (404, the message says how it
        closed), as ``signal`` and ``terminate`` of it do."""
        await self.client._outbound.cancel_workflow(CancelWorkflowInput(self, reason, request_id))

    async def _cancel(self, input: CancelWorkflowInput) -> None:
        body = {"reason": input.reason, "run_id": self._target_run_id,
                "request_id": input.request_id or str(uuid.uuid4()), "identity": self.client.identity}
        with extra_headers(input.headers):
            await self.client._idempotent(f"{self._path}/cancel", body,
                                          what=f"cancel of workflow {self.workflow_id}")

    async def reset(self, to: int | ResetPoint | str = ResetPoint.LAST, *, reason: str = "",
                    reapply_signals: bool = True, request_id: str | None = None) -> WorkflowHandle:
        """Reset the run (this handle's, or the current one) to one of its workflow tasks: a
        new run replays its history up to that task and goes on with the workers' current
        code, the repair after a bad deploy. ``to``: an event id of the task (its
        WorkflowTaskStarted, Completed, Failed or TimedOut event), ``ResetPoint.FIRST`` or
        ``ResetPoint.LAST`` (the last task completed). Signals received after that point
        are received again by the new run unless ``reapply_signals`` is false; the old run,
        if still open, is terminated naming the new one (``result()`` of a handle to it
        follows). Returns a handle to the new run. Retried with the same ``request_id``
        through outages, it resets once. A point that names no workflow task of the run
        raises RPCError (400, InvalidResetPoint) saying why."""
        if isinstance(to, bool) or not isinstance(to, int | str):
            raise TypeError("to must be an event id or a ResetPoint")
        point, event_id = (ResetPoint.EVENT_ID, to) if isinstance(to, int) else (ResetPoint(to), 0)
        body = {"reset_point": point.value, "event_id": event_id, "reapply_signals": reapply_signals,
                "reason": reason, "run_id": self.run_id, "request_id": request_id or str(uuid.uuid4()),
                "identity": self.client.identity}
        answer = await self.client._idempotent(f"{self._path}/reset", body,
                                               what=f"reset of workflow {self.workflow_id}")
        return WorkflowHandle(self.client, self.workflow_id, run_id=str(answer["run_id"]),
                              result_type=self.result_type)

    async def execute_update(self, update: str | Callable[..., Any], *args: Any, id: str | None = None,
                             timeout: float | timedelta | None = None, result_type: Any = None) -> Any:
        """Run an update (``Wf.my_update`` or its name) on the workflow and return what its
        handler returned. Raises WorkflowUpdateFailedError when the validator rejected it
        (nothing recorded) or the handler raised (``cause`` is the ApplicationError),
        WorkflowAlreadyClosedError when the run closed before the update completed, and
        TimeoutError when ``timeout`` passes first (without one, the wait goes on through
        frontend outages until the outcome). The same ``id`` never runs twice: asked
        again, the update answers its first outcome. The result is converted to the handler's
        return annotation (or ``result_type``)."""
        handle = await self.start_update(update, *args, id=id, wait_for_stage="completed", timeout=timeout,
                                         result_type=result_type)
        return await handle.result(timeout=timeout)

    async def start_update(self, update: str | Callable[..., Any], *args: Any, id: str | None = None,
                           wait_for_stage: str = "accepted", timeout: float | timedelta | None = None,
                           result_type: Any = None) -> WorkflowUpdateHandle:
        """Send an update and return once the workflow accepted it (``wait_for_stage``
        "accepted") or it completed ("completed"); ``result()`` on the handle waits for its
        outcome, converted to the handler's return annotation (or ``result_type``). A
        rejection raises WorkflowUpdateFailedError here."""
        if result_type is None and not isinstance(update, str):
            result_type = signature_of(update, method=True).result
        return await self.client._outbound.start_workflow_update(StartWorkflowUpdateInput(
            self, update_name_of(update), args, id or str(uuid.uuid4()), wait_for_stage, timeout, result_type))

    async def _start_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle:
        name = input.update
        handle = WorkflowUpdateHandle(self, input.update_id, name,
                                      await self.client._encode_args(input.args, f"update {name}"), input.result_type)
        with extra_headers(input.headers):
            await handle._ask(input.wait_for_stage, input.timeout)
        return handle

    def get_update_handle(self, id: str, *, result_type: Any = None) -> WorkflowUpdateHandle:
        """A handle on update ``id`` of this workflow, sent by anyone (another client, an
        earlier process), as Temporal's: ``result()`` waits for its outcome, converted to
        ``result_type``. Asking never runs an update: an id the run does not know raises
        WorkflowUpdateFailedError (rejected, cause of type ``UpdateNotFound``)."""
        return WorkflowUpdateHandle(self, id, UPDATE_RESULT_NAME, [], result_type)

    async def history(self, *, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every event of the run, in order, following the pages."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params = {"run_id": self.run_id, "page_size": page_size, "next_page_token": token}
            answer = await self.client._read(f"{self._path}/history", params,
                                             what=f"history of workflow {self.workflow_id}")
            events.extend(answer.get("events") or [])
            token = answer.get("next_page_token")
            if not token:
                return events

    async def result(self, timeout: float | timedelta | None = None, *, follow_runs: bool = True) -> Any:
        """Wait for the workflow to close and return its result.

        Raises WorkflowFailureError when it failed, timed out or was terminated, and
        TimeoutError when ``timeout`` (seconds or a timedelta) passes first, also while the
        frontend cannot be reached (without a timeout that is waited out, logged at
        WARNING). Continue-as-new, and a reset that terminated the run, are followed to the new
        run unless ``follow_runs`` is false.
        """
        return await self._follow(None, timeout, follow_runs=follow_runs)

    async def _follow(self, answer: Mapping[str, Any] | None, timeout: float | timedelta | None, *,
                      follow_runs: bool) -> Any:
        """``result`` from a first outcome already in hand (or None: ask for one)."""
        loop = asyncio.get_running_loop()
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = None if seconds is None else loop.time() + seconds
        run_id = self.run_id
        failures = 0
        while True:
            if answer is None:
                poll = self.client.long_poll_seconds
                left = poll if deadline is None else deadline - loop.time()
                wait = max(0.0, min(poll, left))
                try:
                    answer = await self.client._wait_result(
                        self.workflow_id, run_id, wait,
                        # With a deadline, a frontend that does not answer must not hold the
                        # caller past it.
                        timeout=wait + (15 if deadline is None else 1),
                    )
                    failures = 0
                except RPCError as err:
                    if not err.retryable:
                        raise
                    if deadline is not None and loop.time() >= deadline:
                        raise TimeoutError(
                            f"workflow {self.workflow_id}: no result within {seconds}s ({err})") from err
                    failures += 1
                    if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th... failure in a row
                        _log.warning("waiting for the result of workflow %s: %s; retrying", self.workflow_id, err)
                    # The frontend may be restarting; keep waiting. Busy or over the namespace's
                    # limit, as long as it asks (a sooner try would only be refused again).
                    await asyncio.sleep(outage_pause(err, deadline, loop.time()))
                    continue
            status = str(answer.get("status"))
            if status == "Completed":
                return await self.client._decode_value(answer.get("result"), self.result_type,
                                                       f"result of workflow {self.workflow_id}")
            if status == "Running":
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError(f"workflow {self.workflow_id} still running after {seconds}s")
                answer = None
                continue
            # Continue-as-new, a termination by a reset (it names the reset's new run), and a
            # failure or timeout retried under the workflow's retry policy (it names the retry).
            if status in ("ContinuedAsNew", "Terminated", "Failed", "TimedOut") and follow_runs \
                    and answer.get("new_run_id"):
                run_id = str(answer["new_run_id"])
                answer = None
                continue
            if status == "Canceled":
                details = await self.client._decode_value(
                    answer.get("details"), None, f"details of the cancellation of {self.workflow_id}")
                raise WorkflowFailureError(status, cause=CanceledError(
                    "workflow canceled", *(() if details is None else (details,))))
            if status == "Terminated":
                raise WorkflowFailureError(status, answer.get("failure"),
                                           cause=TerminatedError(str(answer.get("reason") or "")))
            raise WorkflowFailureError(status, answer.get("failure"))


class WorkflowUpdateHandle:
    """An update sent to a workflow: ``result()`` waits for its outcome.

    Waiting is asking again with the same update id (the update runs once per id): a
    wait that runs out, or a frontend that restarts, loses nothing. Once an answer names the
    run that took the update (``run_id``), every later ask names that run, as Temporal's
    handle polls the run that accepted it.
    """

    def __init__(self, workflow: WorkflowHandle, update_id: str, name: str, args: list[Any],
                 result_type: Any = None) -> None:
        self.workflow = workflow
        self.id = update_id
        self.name = name
        #: What ``result()`` converts the handler's return value to (None: plain JSON).
        self.result_type = result_type
        self._input = args
        self._outcome: Mapping[str, Any] | None = None
        #: The run that answered for the update (None until one did): later asks name it.
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"WorkflowUpdateHandle(id={self.id!r}, name={self.name!r}, workflow_id={self.workflow.workflow_id!r})"

    async def result(self, timeout: float | timedelta | None = None) -> Any:
        """The handler's return value; WorkflowUpdateFailedError if it was rejected or raised.
        Without a ``timeout`` it waits until the outcome, through frontend outages however
        long (as WorkflowHandle.result does); with one, TimeoutError there."""
        outcome = await self._ask("completed", timeout)
        failure = outcome.get("failure")
        if failure is not None:
            raise WorkflowUpdateFailedError(self.id, failure, rejected=False)
        return await self.workflow.client._decode_value(outcome.get("result"), self.result_type,
                                                        f"result of update {self.name} ({self.id})")

    async def _ask(self, stage: str, timeout: float | timedelta | None) -> Mapping[str, Any]:
        if self._outcome is not None and (self._outcome.get("stage") == "completed" or stage == "accepted"):
            return self._outcome
        loop = asyncio.get_running_loop()
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = None if seconds is None else loop.time() + seconds
        client = self.workflow.client
        failures = 0  # asks that failed in a row (the client's retries spent)
        while True:
            left = client.long_poll_seconds if deadline is None else deadline - loop.time()
            wait = max(0.0, min(client.long_poll_seconds, left))
            body = {"update_id": self.id, "update_name": self.name, "input": self._input,
                    "run_id": self.run_id or self.workflow._target_run_id, "wait_for_stage": stage,
                    "wait_seconds": wait, "request_id": str(uuid.uuid4()), "identity": client.identity}
            try:
                # With a deadline, neither a frontend that does not answer nor one that cannot be
                # reached holds the caller past it (the client's retries would go on for 30 s).
                outcome = await client._idempotent(
                    f"{self.workflow._path}/update", body, timeout=wait + (15 if deadline is None else 1),
                    within=None if deadline is None else deadline - loop.time(),
                    what=f"update {self.name} of workflow {self.workflow.workflow_id}")
                failures = 0
            except RPCError as err:
                if not unavailable_or_throttled(err):
                    raise
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError(f"update {self.id} of workflow {self.workflow.workflow_id}: no {stage}"
                                       f" outcome within {seconds}s ({err})") from err
                # Without a timeout the wait lasts until the outcome, through outages, as
                # result()'s does: the client's retry budget is spent, so ask again (the
                # update id makes that safe), as the frontend asks if it says.
                failures += 1
                if deadline is None and failures & (failures - 1) == 0:  # the 1st, 2nd, 4th... in a row
                    _log.warning("waiting for the %s outcome of update %s of workflow %s: %s; retrying",
                                 stage, self.id, self.workflow.workflow_id, err)
                await asyncio.sleep(outage_pause(err, deadline, loop.time()))
                continue
            if outcome.get("run_id") and self.run_id is None:
                # The run that took the update answers from now on: a continue-as-new since
                # must not send the next ask to a run that would run it again.
                self.run_id = str(outcome["run_id"])
            reached = outcome.get("stage")
            if reached == "rejected":
                raise WorkflowUpdateFailedError(self.id, outcome.get("failure") or {}, rejected=True)
            if reached == "completed" or (reached == "accepted" and stage == "accepted"):
                self._outcome = outcome
                return outcome
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"update {self.id} of workflow {self.workflow.workflow_id}: no {stage} outcome"
                                   f" within {seconds}s")


class _ClientCalls(ClientOutboundInterceptor):
    """The end of the client's interceptor chain: the calls themselves."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle:
        return await self._client._start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        await input.handle._signal(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        return await input.handle._query(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle:
        return await input.handle._start_update(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        await input.handle._cancel(input)

    async def terminate_workflow(self, input: TerminateWorkflowInput) -> None:
        await input.handle._terminate(input)
