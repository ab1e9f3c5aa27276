"""Co-location: the three ports through which services in one process hand work to each other.

In ``kadence dev`` (services/cluster.py) frontend, history and matching share a process,
and three hops need not go through the broker. Each hop is a port with two
implementations, chosen once where the services are put together (``cluster.py``, each
service's ``__main__``), never switched later:

========================  ==========================  =====================================
port                      over the broker             co-located
========================  ==========================  =====================================
:class:`CommandBus`       :class:`KafkaCommands`      :class:`ColocatedCommands`
                          (history fetches it)        (history takes it from the broker's
                                                      acknowledgement, see gate.py)
:class:`TaskSink`         :class:`OutboxTasks`        :class:`LocalMatching`
                          (published by the relay)    (handed to matching after commit)
:class:`ReplySink`        :class:`OutboxReplies`      :class:`LocalFrontend`
                          (published by the relay)    (handed to the frontend after commit)
========================  ==========================  =====================================

With tracing on, :func:`traced_commands` and :func:`traced_tasks` wrap the co-located
ports so that the trace goes on across the hand-over (the command carries its trace
headers; each task handed over gets a dispatch span): a traced ``kadence dev`` takes the
same path as an untraced one. ``KADENCE_COLOCATE=0`` chooses the broker side of every
port in one process, for bisecting and benchmarking. docs/colocation.md states the
invariants every co-located implementation keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common import telemetry
from services.common.validation import Limits

Headers = tuple[tuple[str, bytes], ...]
Closed = tuple[str, dict[str, Any]]  # run id, its outcome (services/common/outcome.py)
# Told (partition, key, value, headers, the broker's answer to be, the limits its record was
# checked under) of a command queued for the broker.
TakeQueued = Callable[[int, bytes, bytes, Headers, "asyncio.Future[Any]", Limits | None], None]

# Set while a frontend queues several commands at once (a worker's batch of task answers):
# history then takes none of them ahead of its acknowledgement (Intake.offer_early), which
# would run the first alone in a batch and commit, and only then the rest.
_GROUPED: contextvars.ContextVar[bool] = contextvars.ContextVar("kadence_commands_grouped", default=False)


@contextlib.contextmanager
def grouped_commands() -> Iterator[None]:
    """Commands queued within (and in tasks started within) come as a group: see _GROUPED."""
    token = _GROUPED.set(True)
    try:
        yield
    finally:
        _GROUPED.reset(token)


def commands_grouped() -> bool:
    """Whether the command being queued is one of a group (grouped_commands)."""
    return _GROUPED.get()


class HandedTask(Protocol):
    """A task history has committed for matching in this process (history's LocalTask)."""

    @property
    def name(self) -> str: ...  # its record type: WorkflowTask or ActivityTask

    @property
    def record(self) -> dict[str, Any]: ...  # the record, as it would be encoded

    @property
    def events(self) -> Sequence[Mapping[str, Any]] | None: ...  # a workflow task's carried events

    @property
    def headers(self) -> Headers: ...  # the trace headers its outbox record would carry

    @property
    def traceparent(self) -> str | None: ...  # the dispatch span the worker continues, if traced

    @property
    def updates(self) -> list[dict[str, Any]] | None: ...  # a workflow task's update requests at commit


@dataclass(frozen=True, slots=True)
class _TracedTask:
    """A task handed over with the dispatch span its worker continues."""

    name: str
    record: dict[str, Any]
    events: Sequence[Mapping[str, Any]] | None
    headers: Headers
    traceparent: str | None
    updates: list[dict[str, Any]] | None = None


# ---- commands: frontend -> history --------------------------------------------------------------

class CommandBus(Protocol):
    """Where a command the frontend queued for ``kadence.requests`` goes besides the broker."""

    @property
    def colocated(self) -> bool: ...  # history in this process takes it on its acknowledgement

    def headers(self) -> Headers: ...  # trace headers the record and its hand-over carry

    # ``checked``: the limits under which the frontend ran history's own check
    # (validation.check_command) on the very record encoded as ``value``, or None.
    def queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
               acked: asyncio.Future[Any], checked: Limits | None = None) -> None: ...


class KafkaCommands:
    """History fetches every command from the broker."""

    colocated = False

    def headers(self) -> Headers:
        return ()

    def queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
               acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        pass


class ColocatedCommands:
    """History in this process takes each command from the broker's acknowledgement
    (HistoryService.take_queued): no fetch on its way."""

    colocated = True

    def __init__(self, take_queued: TakeQueued) -> None:
        self._take = take_queued

    def headers(self) -> Headers:
        return ()

    def queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
               acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        self._take(partition, key, value, headers, acked, checked)


class TracedCommands:
    """A command bus whose commands carry the caller's trace context, handed over or fetched
    alike, so history's span of the command is the API call's child on both paths."""

    def __init__(self, inner: CommandBus) -> None:
        self._inner = inner
        self.colocated = inner.colocated

    def headers(self) -> Headers:
        return telemetry.current_trace_headers()

    def queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
               acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        self._inner.queued(partition, key, value, headers, acked, checked)


# ---- tasks: history -> matching ------------------------------------------------------------------

class TaskSink(Protocol):
    """Where history's committed tasks go: the outbox, or matching in this process."""

    def takes(self, namespace: str, task_queue: str) -> bool: ...  # asked while a batch runs

    def hand_over(self, tasks: Sequence[HandedTask]) -> None: ...  # after the commit

    # A task handed over and waiting in memory for a poll, not lost: re-dispatch skips it.
    def holds(self, task_id: str) -> bool: ...


class OutboxTasks:
    """Every task is published by the relay."""

    def takes(self, namespace: str, task_queue: str) -> bool:
        return False

    def holds(self, task_id: str) -> bool:
        return False

    def hand_over(self, tasks: Sequence[HandedTask]) -> None:
        pass


class MatchingTarget(Protocol):
    """What the co-located task sink needs of matching (MatchingService)."""

    def takes(self, namespace: str, task_queue: str) -> bool: ...

    def hand_over(self, tasks: Sequence[HandedTask]) -> None: ...

    def holds(self, task_id: str) -> bool: ...


class LocalMatching:
    """Tasks of the queues matching here owns are handed to it after commit, not published."""

    def __init__(self, matching: MatchingTarget) -> None:
        self._matching = matching

    def takes(self, namespace: str, task_queue: str) -> bool:
        return self._matching.takes(namespace, task_queue)

    def hand_over(self, tasks: Sequence[HandedTask]) -> None:
        self._matching.hand_over(tasks)

    def holds(self, task_id: str) -> bool:
        return self._matching.holds(task_id)


TASK_DISPATCH_GROUP = "kadence-matching"  # the consumer group a published task's dispatch span names
_TASK_KINDS = {"WorkflowTask": "workflow", "ActivityTask": "activity"}  # as matching names them


class TracedTasks:
    """A task sink that gives each task handed over its dispatch span (what matching's
    consumer does for a published task), parented by the task's trace headers; the worker
    continues from it."""

    def __init__(self, inner: TaskSink) -> None:
        self._inner = inner

    def takes(self, namespace: str, task_queue: str) -> bool:
        return self._inner.takes(namespace, task_queue)

    def holds(self, task_id: str) -> bool:
        return self._inner.holds(task_id)

    def hand_over(self, tasks: Sequence[HandedTask]) -> None:
        if not telemetry.tracing():
            self._inner.hand_over(tasks)
            return
        traced: list[HandedTask] = []
        for task in tasks:
            r = task.record
            key = f"{r.get('namespace', '')}/{r.get('task_queue', '')}".encode()
            attributes = {"kadence.workflow_id": r.get("workflow_id") or "", "kadence.run_id": r.get("run_id") or "",
                          "kadence.workflow_type": r.get("workflow_type") or "",
                          "kadence.task_kind": _TASK_KINDS.get(task.name, task.name),
                          "kadence.task_id": r.get("task_id") or "", "kadence.sync_match": False}
            with telemetry.handed_span("kadence.tasks", key, task.headers, TASK_DISPATCH_GROUP,
                                       attributes) as dispatch:
                traced.append(_TracedTask(task.name, task.record, task.events, task.headers, dispatch.traceparent,
                                          task.updates))
        self._inner.hand_over(traced)


# ---- replies and closes: history -> frontend -------------------------------------------------------

class ReplySink(Protocol):
    """Where history's replies and close notices for frontends go."""

    def takes(self, reply_to: str) -> bool: ...  # a reply to this frontend is handed over, not published

    def replies(self, replies: list[dict[str, Any]]) -> None: ...  # after the commit

    def closed(self, runs: list[Closed]) -> None: ...  # after the commit (the notice is published too)


class OutboxReplies:
    """Every reply is published by the relay; closes reach frontends by their notifications."""

    def takes(self, reply_to: str) -> bool:
        return False

    def replies(self, replies: list[dict[str, Any]]) -> None:
        pass

    def closed(self, runs: list[Closed]) -> None:
        pass


class FrontendTarget(Protocol):
    """What the co-located reply sink needs of the frontend (FrontendService)."""

    @property
    def instance_id(self) -> str: ...

    def take_replies(self, replies: list[dict[str, Any]]) -> None: ...

    def take_closed(self, runs: list[Closed]) -> None: ...


class LocalFrontend:
    """Replies to the frontend in this process, and the runs that closed, handed to it."""

    def __init__(self, frontend: FrontendTarget) -> None:
        self._frontend = frontend
        self._reply_to = frontend.instance_id

    def takes(self, reply_to: str) -> bool:
        return reply_to == self._reply_to

    def replies(self, replies: list[dict[str, Any]]) -> None:
        self._frontend.take_replies(replies)

    def closed(self, runs: list[Closed]) -> None:
        self._frontend.take_closed(runs)


def traced_commands(bus: CommandBus) -> CommandBus:
    """``bus``, carrying trace context whenever tracing is on (checked per command: it costs
    one call when off, and tracing may be configured after the services start)."""
    return TracedCommands(bus)


def traced_tasks(sink: TaskSink) -> TaskSink:
    """``sink``, giving each handed-over task its dispatch span whenever tracing is on."""
    return sink if isinstance(sink, OutboxTasks) else TracedTasks(sink)
