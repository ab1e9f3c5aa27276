"""Traces and metrics of a history shard, as a subclass that wraps the shard loop's steps.

:class:`InstrumentedShard` adds, around the plain :class:`~.shard.Shard`:

- a CONSUMER span per command (``process kadence.requests``) parented by the record's
  ``traceparent``; the command then runs with that span's context as its record
  headers, so the outbox rows it writes (tasks, replies, history records) carry the
  history span on to matching and the rest;
- the batch size histogram and the position behind the shard's consumer-lag gauge;
- the workflows started/completed/failed counters, from the events of each commit;
- the outbox backlog gauge (rows committed and not yet taken by the relay).

The service uses it only when tracing or metrics are on (:func:`shard_factory`), so a
service without telemetry runs the plain shard loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from kadence_protocol.tracing import TRACE_HEADERS, tracer
from services.common import kafka, telemetry

from .builder import Mutation
from .context import BatchContext
from .shard import Shard
from .store import OutboxRow

_GROUP = "kadence-history"  # the consumer group of service.py (imported late there; no cycle here)
_FAILED = {"WorkflowExecutionFailed": "Failed", "WorkflowExecutionTimedOut": "TimedOut"}

ShardFactory = Callable[..., Shard]


class _CountingQueue(asyncio.Queue[list[OutboxRow]]):
    """The relay queue, counting the rows (not the batches) it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def put_nowait(self, item: list[OutboxRow]) -> None:
        super().put_nowait(item)
        self.rows += len(item)

    def get_nowait(self) -> list[OutboxRow]:
        item = super().get_nowait()
        self.rows -= len(item)
        return item


class InstrumentedShard(Shard):
    def __init__(self, *args: Any, consumer: AIOKafkaConsumer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relay_queue = _CountingQueue()
        self._consumer = consumer
        self._tp = TopicPartition(kafka.REQUESTS, self.shard_id)
        self.position: int | None = None
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
        queue = self.relay_queue
        return max(0, queue.rows) if isinstance(queue, _CountingQueue) else queue.qsize()

    # -- the wrapped steps ----------------------------------------------------------------

    async def acquire(self) -> int:
        offset = await super().acquire()
        self.position = offset
        return offset

    async def stop(self) -> None:
        telemetry.unregister_shard(self)
        await super().stop()

    async def _process(self, batch: list[Any], early: asyncio.Future[Any] | None = None, **options: Any) -> None:
        m = telemetry.metrics()
        if m is not None:
            m.batch_size.record(sum(len(i) if isinstance(i, list) else 1 for i in batch),
                                {"kadence.shard_id": self.shard_id})
        await super()._process(batch, early, **options)
        self.position = self.consumed  # the next offset the loop takes

    async def _command(self, ctx: BatchContext, record: ConsumerRecord[bytes, bytes]) -> str | None:
        if tracer() is None:
            return await super()._command(ctx, record)
        with telemetry.consumer_span(record, _GROUP) as consumed:
            # The command continues under this span: its outbox rows take these headers.
            headers = tuple((k, v) for k, v in (record.headers or ()) if k not in TRACE_HEADERS)
            traced = dataclasses.replace(record, headers=headers + tuple(consumed.headers()))
            reason = await super()._command(ctx, traced)
            if reason is not None:
                consumed.fail(reason)
            self._annotate(consumed, record)
            return reason

    def _annotate(self, consumed: telemetry.Consumed, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        namespace, _, workflow_id = record.key.decode("utf-8", "replace").partition("/")
        run_id = self.current.get((namespace, workflow_id))
        state = self.cache.get(run_id) if run_id is not None else None
        if state is not None:
            consumed.annotate({"kadence.run_id": state.run_id, "kadence.workflow_type": state.workflow_type,
                               "kadence.task_queue": state.task_queue, "kadence.shard_id": self.shard_id})

    def _after_commit(self, ctx: BatchContext, mutations: list[Mutation], outbox: list[OutboxRow]) -> None:
        super()._after_commit(ctx, mutations, outbox)
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


def shard_factory(consumer: AIOKafkaConsumer) -> ShardFactory:
    """The shard class to use now: instrumented when tracing or metrics are on."""
    if tracer() is None and telemetry.metrics() is None:
        return Shard
    return functools.partial(InstrumentedShard, consumer=consumer)
