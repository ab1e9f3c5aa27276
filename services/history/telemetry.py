"""Traces and metrics of a history shard, as an observer injected into its units (observer.py).

:class:`ShardTelemetry` adds, around the plain shard:

- a CONSUMER span per command (``process kadence.requests``) parented by the record's
  ``traceparent``, fetched or handed over alike; the command then runs with that span's
  context as its record headers, so the outbox rows it writes (tasks, replies, history
  records) and the tasks it hands over carry the history span on to matching and the rest;
- the batch size histogram and the position behind the shard's consumer-lag gauge;
- the workflows started/completed/failed counters, from the events of each commit;
- the outbox backlog gauge (rows committed and not yet taken by the relay).

The service uses it only when tracing or metrics are on (:func:`observer_factory`), so a
service without telemetry runs the plain shard loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from kadence_protocol.tracing import TRACE_HEADERS, tracer
from services.common import kafka, telemetry

from .builder import Mutation
from .neighbours import HandedCommand
from .observer import NO_OBSERVER, RunCommand, RunOf, ShardObserver

_GROUP = "kadence-history"  # the consumer group of service.py (imported late there; no cycle here)
_FAILED = {"WorkflowExecutionFailed": "Failed", "WorkflowExecutionTimedOut": "TimedOut"}

ObserverFactory = Callable[[], ShardObserver]


def _no_run(key: tuple[str, str]) -> None:
    return None


class ShardTelemetry(ShardObserver):
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.shard_id = -1
        self._tp = TopicPartition(kafka.REQUESTS, 0)
        self.position: int | None = None
        self._backlog: Callable[[], int] = lambda: 0
        self._run_of: RunOf = _no_run

    def bind(self, shard_id: int, *, backlog: Callable[[], int], run_of: RunOf) -> None:
        self.shard_id, self._tp = shard_id, TopicPartition(kafka.REQUESTS, shard_id)
        self._backlog, self._run_of = backlog, run_of
        telemetry.register_shard(self)

    # -- gauges (called from the metrics exporter's thread: read plain attributes only) --

    def consumer_lag(self) -> int | None:
        if self.position is None:
            return None
        try:
            end = self._consumer.highwater(self._tp)
        except (KeyError, AttributeError, AssertionError, ValueError):
            return None  # not assigned any more
        return None if end is None else max(0, end - self.position)

    def outbox_backlog(self) -> int:
        return max(0, self._backlog())

    # -- the hooks -------------------------------------------------------------------------

    def acquired(self, offset: int) -> None:
        self.position = offset

    def stopped(self) -> None:
        telemetry.unregister_shard(self)

    def batch(self, size: int) -> None:
        m = telemetry.metrics()
        if m is not None:
            m.batch_size.record(size, {"kadence.shard_id": self.shard_id})

    def processed(self, consumed: int) -> None:
        self.position = consumed  # the next offset the loop takes

    def wrap_command(self, run: RunCommand) -> RunCommand:
        async def traced(ctx: Any, record: ConsumerRecord[bytes, bytes]) -> str | None:
            if tracer() is None:
                return await run(ctx, record)
            with telemetry.consumer_span(record, _GROUP) as consumed:
                # The command continues under this span: its outbox rows take these headers.
                headers = tuple((k, v) for k, v in (record.headers or ()) if k not in TRACE_HEADERS)
                headers += tuple(consumed.headers())
                # A command handed over in this process is a NamedTuple (neighbours.py).
                traced_record = (record._replace(headers=headers) if isinstance(record, HandedCommand)
                                 else dataclasses.replace(record, headers=headers))
                reason = await run(ctx, traced_record)
                if reason is not None:
                    consumed.fail(reason)
                self._annotate(consumed, record)
                return reason
        return traced

    def _annotate(self, consumed: telemetry.Consumed, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        namespace, _, workflow_id = record.key.decode("utf-8", "replace").partition("/")
        state = self._run_of((namespace, workflow_id))
        if state is not None:
            consumed.annotate({"kadence.run_id": state.run_id, "kadence.workflow_type": state.workflow_type,
                               "kadence.task_queue": state.task_queue, "kadence.shard_id": self.shard_id})

    def committed(self, mutations: Sequence[Mutation]) -> None:
        m = telemetry.metrics()
        if m is None:
            return
        for mutation in mutations:
            for event in mutation.events:
                event_type = event["event_type"]
                if not event_type.startswith("WorkflowExecution"):
                    continue
                s = mutation.state
                attributes = {"kadence.namespace": s.namespace, "kadence.workflow_type": s.workflow_type}
                if event_type == "WorkflowExecutionStarted":
                    m.workflows_started.add(1, attributes)
                elif event_type == "WorkflowExecutionCompleted":
                    m.workflows_completed.add(1, attributes)
                elif event_type in _FAILED:
                    m.workflows_failed.add(1, {**attributes, "kadence.close_status": _FAILED[event_type]})


def observer_factory(consumer: AIOKafkaConsumer) -> ObserverFactory:
    """The shards' observers from now on: telemetry when tracing or metrics are on."""
    if tracer() is None and telemetry.metrics() is None:
        return lambda: NO_OBSERVER
    return lambda: ShardTelemetry(consumer)
