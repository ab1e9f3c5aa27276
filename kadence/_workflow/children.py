"""Child workflows inside a parent's workflow code: their commands, events and handles.

``workflow.start_child_workflow`` decides a ``StartChildWorkflowExecution`` command and
waits for ``ChildWorkflowExecutionStarted`` (or ``StartChildWorkflowExecutionFailed``,
raised as :class:`~kadence.exceptions.ChildWorkflowError`); the handle it returns waits for
the child's closing event, and signals the child with ``SignalExternalWorkflowExecution``
(as :class:`ExternalWorkflowHandle` signals or cancels any workflow of the namespace).
Every outcome is an input event of history, so replay resolves the same futures in the
same activations. The runner's tables take the command/event pairs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kadence._failure import exception_from_failure
from kadence._workflow.definition import signal_name_of
from kadence._workflow.owned import Owned
from kadence.exceptions import (
    ApplicationError,
    CanceledError,
    ChildWorkflowError,
    FailureError,
    PayloadError,
    TerminatedError,
    WorkflowTimeoutError,
)
from kadence_protocol.enums import CommandType, EventType
from kadence_protocol.queries import CANCEL_CHILD_SIGNAL

if TYPE_CHECKING:
    from kadence._workflow.instance import WorkflowInstance

__all__ = ["CHILD_COMMAND_EVENT_TYPE", "CHILD_IDENTITY_ATTRIBUTE", "CHILD_INPUT_EVENT_TYPES",
           "SELF_CANCEL_ERROR_TYPE", "ChildWorkflowHandle", "Children", "ExternalWorkflowHandle"]

#: The ApplicationError type ExternalWorkflowHandle.cancel raises on a handle on its own run.
SELF_CANCEL_ERROR_TYPE = "CancelExternalWorkflowExecutionFailed"

R = TypeVar("R")
_CLOSED = frozenset({EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED, EventType.CHILD_WORKFLOW_EXECUTION_FAILED,
                     EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT, EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED,
                     EventType.CHILD_WORKFLOW_EXECUTION_CANCELED})
_SIGNAL_OUTCOMES = frozenset({EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED,
                              EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED})

#: Events about children that workflow code reacts to.
CHILD_INPUT_EVENT_TYPES = frozenset({EventType.CHILD_WORKFLOW_EXECUTION_STARTED,
                                     EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED,
                                     *_CLOSED, *_SIGNAL_OUTCOMES})
#: The history event each child command becomes.
CHILD_COMMAND_EVENT_TYPE: dict[str, EventType] = {
    CommandType.START_CHILD_WORKFLOW_EXECUTION: EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION: EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
}
#: The attribute a replayed command must agree on with its event.
CHILD_IDENTITY_ATTRIBUTE: dict[str, str] = {
    CommandType.START_CHILD_WORKFLOW_EXECUTION: "workflow_id",
    CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION: "signal_name",
}


@dataclass
class _PendingChild:
    workflow_id: str
    workflow_type: str
    started: asyncio.Future[str]  # the child's run id
    closed: asyncio.Future[Any]  # its result
    initiated_event_id: int = 0
    run_id: str | None = None
    handle: ChildWorkflowHandle[Any] | None = field(default=None, repr=False)
    result_type: Any = None  # the child's run method's return annotation (None: plain JSON)
    cancel_sent: bool = False  # the child was asked to cancel (once, however many waits end)


class ChildWorkflowHandle(Generic[R]):
    """A started child workflow: ``await handle`` (or ``await handle.result()``) for its
    result, ``await handle.signal(...)`` to signal it. ``R``: the child's result type, as
    the type checker knows it from the run method given to start_child_workflow."""

    def __init__(self, children: Children, pending: _PendingChild) -> None:
        self._children = children
        self._pending = pending

    @property
    def id(self) -> str:
        """The child's workflow id."""
        return self._pending.workflow_id

    @property
    def run_id(self) -> str | None:
        """The run id of the child's first run."""
        return self._pending.run_id

    @property
    def workflow_type(self) -> str:
        return self._pending.workflow_type

    async def result(self) -> R:
        """The child's result; raises :class:`ChildWorkflowError` if it did not complete.

        Cancelling the code that awaits it (the workflow's cancellation, ``asyncio.wait_for``,
        ``task.cancel()``) asks the child to cancel and, as Temporal's default for children,
        waits until the child has closed before ``asyncio.CancelledError`` goes on."""
        closed = self._pending.closed
        try:
            result: R = await asyncio.shield(closed)
        except asyncio.CancelledError:
            if closed.done():
                raise
            self._children.request_cancel(self._pending)
            # However the child closes (canceled, or completing anyway), the wait was cancelled.
            with contextlib.suppress(Exception):
                await asyncio.shield(closed)
            raise
        return result

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()

    async def signal(self, signal: str | Callable[..., Any], *args: Any) -> None:
        """Signal the child (``signal``: a ``@workflow.signal`` method or a signal name);
        returns once history delivered it, and raises ApplicationError of type
        ``SignalExternalWorkflowExecutionFailed`` when the child has closed."""
        await self._children.signal(self._pending, signal_name_of(signal), args)


class ExternalWorkflowHandle:
    """Any workflow of this run's namespace, by workflow id (and run id: None for its current
    run), from :func:`kadence.workflow.get_external_workflow_handle`. Its calls travel as a
    child's do (``SignalExternalWorkflowExecution``), without the child-only check."""

    def __init__(self, children: Children, workflow_id: str, run_id: str | None) -> None:
        self._children = children
        self._workflow_id = workflow_id
        self._run_id = run_id

    @property
    def id(self) -> str:
        return self._workflow_id

    @property
    def run_id(self) -> str | None:
        return self._run_id

    async def signal(self, signal: str | Callable[..., Any], *args: Any) -> None:
        """Signal the workflow (``signal``: a ``@workflow.signal`` method or a signal name);
        returns once its shard recorded the signal (once, however often it is redelivered), and
        raises ApplicationError of type ``SignalExternalWorkflowExecutionFailed`` when it has
        no open run (or ``run_id`` is not open)."""
        await self._children.signal_workflow(self._workflow_id, self._run_id, signal_name_of(signal), args,
                                             child_workflow_only=False)

    async def cancel(self) -> None:
        """Ask the workflow to cancel (its code sees ``asyncio.CancelledError``); returns once its
        shard recorded the request, and raises as :meth:`signal` when it has no open run.

        A handle on this very run (its workflow id, and its run id or none) is refused here,
        with ApplicationError of type ``CancelExternalWorkflowExecutionFailed`` and no command
        decided, as Temporal refuses a workflow cancelling itself; a signal to itself is
        delivered."""
        if self._children.is_own_run(self._workflow_id, self._run_id):
            raise ApplicationError(
                f"a workflow cannot cancel itself through an external handle (workflow {self._workflow_id!r}"
                " is this run's own): return from the run method, or raise ApplicationError, to end it",
                type=SELF_CANCEL_ERROR_TYPE, non_retryable=True)
        await self._children.signal_workflow(self._workflow_id, self._run_id, CANCEL_CHILD_SIGNAL, [],
                                             child_workflow_only=False)


class Children(Owned):
    """One workflow instance's children and signals to them, by initiated event id."""

    def __init__(self, instance: WorkflowInstance) -> None:
        super().__init__(instance)
        self._seq = 0
        self._pending: dict[int, _PendingChild] = {}
        self._signals: dict[int, asyncio.Future[None]] = {}

    async def start(self, workflow_type: str, args: Sequence[Any],
                    attributes: Mapping[str, Any], *, result_type: Any = None) -> ChildWorkflowHandle[Any]:
        from kadence._workflow.instance import Command

        instance = self._instance
        self._seq += 1
        workflow_id = str(attributes.get("workflow_id") or f"{instance.seed_run_id}-child-{self._seq}")
        loop = instance.loop
        pending = _PendingChild(workflow_id, workflow_type, loop.create_future(), loop.create_future(),
                                result_type=result_type)
        pending.handle = ChildWorkflowHandle(self, pending)

        def recorded(event_id: int) -> None:
            pending.initiated_event_id = event_id
            self._pending[event_id] = pending

        attrs = {
            **attributes,
            "workflow_id": workflow_id,
            "workflow_type": workflow_type,
            "input": instance.converter.encode_args(args, what=f"child workflow {workflow_type}"),
        }
        command = Command(CommandType.START_CHILD_WORKFLOW_EXECUTION, attrs, recorded)
        instance._add(command)
        try:
            await asyncio.shield(pending.started)
        except asyncio.CancelledError:
            decided = next((i for i, c in enumerate(instance._commands) if c is command), None)
            if decided is not None:  # decided in this very task: history never hears of it
                del instance._commands[decided]
                raise
            # The start is on its way: see it through, then cancel the child as an awaited
            # child is cancelled (ChildWorkflowHandle.result), rather than leave it running.
            with contextlib.suppress(Exception):
                await asyncio.shield(pending.started)
            if pending.run_id is not None:
                self.request_cancel(pending)
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending.closed)
            raise
        return pending.handle

    async def signal(self, pending: _PendingChild, signal_name: str, args: Sequence[Any]) -> None:
        await self.signal_workflow(pending.workflow_id, pending.run_id, signal_name, args, child_workflow_only=True)

    def is_own_run(self, workflow_id: str, run_id: str | None) -> bool:
        """Whether ``workflow_id``/``run_id`` (None: the current run) names this run."""
        instance = self._instance
        return workflow_id == instance.workflow_id and run_id in (None, instance.run_id)

    async def signal_workflow(self, workflow_id: str, run_id: str | None, signal_name: str, args: Sequence[Any],
                              *, child_workflow_only: bool) -> None:
        """Signal ``workflow_id`` of this namespace (only a child of this run when
        ``child_workflow_only``) and wait until history delivered it or failed it."""
        from kadence._workflow.instance import Command

        future: asyncio.Future[None] = self._instance.loop.create_future()

        def recorded(event_id: int) -> None:
            self._signals[event_id] = future

        self._instance._add(Command(CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION, {
            "workflow_id": workflow_id, "run_id": run_id, "signal_name": signal_name,
            "input": self._instance.converter.encode_args(args, what=f"signal {signal_name}"),
            "child_workflow_only": child_workflow_only,
        }, recorded))
        await future

    def request_cancel(self, pending: _PendingChild) -> None:
        """Ask a started child to cancel: a signal history turns into the child's cancel
        request (CANCEL_CHILD_SIGNAL). Nobody awaits its outcome; a child closed already
        makes it fail, which changes nothing."""
        from kadence._workflow.instance import Command

        if pending.cancel_sent or pending.run_id is None:
            return
        pending.cancel_sent = True
        future: asyncio.Future[None] = self._instance.loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def recorded(event_id: int) -> None:
            self._signals[event_id] = future

        self._instance._add(Command(CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION, {
            "workflow_id": pending.workflow_id, "run_id": pending.run_id, "signal_name": CANCEL_CHILD_SIGNAL,
            "input": self._instance.converter.encode_args([], what="cancel of a child"), "child_workflow_only": True,
        }, recorded))

    def deliver(self, kind: str, attrs: Mapping[str, Any]) -> None:
        """Resolve what an event about a child (or a signal to one) settles."""
        iid = int(attrs["initiated_event_id"])
        if kind in _SIGNAL_OUTCOMES:
            future = self._signals.pop(iid, None)
            if future is None or future.done():
                return
            if kind == EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED:
                future.set_result(None)
            else:
                future.set_exception(ApplicationError(
                    f"signal to workflow {attrs.get('workflow_id')} failed: {attrs.get('cause')}",
                    type=EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED, non_retryable=True))
            return
        pending = self._pending.get(iid)
        if pending is None:
            return
        if kind == EventType.CHILD_WORKFLOW_EXECUTION_STARTED:
            pending.run_id = str(attrs["run_id"])
            _settle(pending.started, lambda f: f.set_result(str(attrs["run_id"])))
            return
        del self._pending[iid]
        if kind == EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED:
            cause: FailureError = ApplicationError(
                f"workflow id {pending.workflow_id!r} is in use by a run that is open",
                type=str(attrs.get("cause") or EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED), non_retryable=True)
            error = self._error(pending, "could not start", cause)
            _settle(pending.started, lambda f: f.set_exception(error))
            return
        if kind == EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED:
            try:
                result = self._instance.converter.decode_value(
                    attrs.get("result"), pending.result_type, what=f"result of child workflow {pending.workflow_id}")
            except PayloadError as exc:
                failed = exc  # the name ``exc`` is gone once the handler ends
                _settle(pending.closed, lambda f: f.set_exception(failed))
                return
            _settle(pending.closed, lambda f: f.set_result(result))
            return
        if kind == EventType.CHILD_WORKFLOW_EXECUTION_FAILED:
            cause = exception_from_failure(attrs.get("failure") or {})
            what = f"failed: {cause.message}"
        elif kind == EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT:
            cause, what = WorkflowTimeoutError(), "timed out"
        elif kind == EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED:
            cause, what = TerminatedError(str(attrs.get("reason") or "")), "was terminated"
        else:
            # As the client sees a canceled run: the details it closed with, if any.
            details = self._instance.converter.decode_value(attrs.get("details"), None, what="details")
            cause = CanceledError("workflow canceled", *(() if details is None else (details,)))
            what = "was canceled"
        error = self._error(pending, what, cause)
        _settle(pending.closed, lambda f: f.set_exception(error))

    @staticmethod
    def _error(pending: _PendingChild, what: str, cause: FailureError) -> ChildWorkflowError:
        return ChildWorkflowError(
            f"child workflow {pending.workflow_type} (id {pending.workflow_id}) {what}",
            workflow_id=pending.workflow_id, workflow_type=pending.workflow_type, run_id=pending.run_id,
            initiated_event_id=pending.initiated_event_id, cause=cause)


def _settle(future: asyncio.Future[Any], how: Callable[[asyncio.Future[Any]], None]) -> None:
    if future.done():
        return  # the workflow stopped waiting (its awaiting task was cancelled)
    how(future)
    # Marked as retrieved, so that an outcome nobody awaits logs nothing when collected;
    # whoever awaits it still gets the error.
    future.exception()
