"""Start and signal workflows by producing to Kafka, with no HTTP call.

Everything here is a convenience over the open protocol (docs/protocol.md): a command is
one Avro single-object encoded record on ``kadence.requests`` keyed
``namespace/workflow_id``; when its ``reply_to`` is set, the outcome is a ``Reply`` on
``kadence.replies`` keyed by that ``reply_to``. A plain Kafka producer holding
``schemas/`` needs none of this module; :class:`KafkaIngress` merely pairs an aiokafka
producer with a reader of the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kadence._converter import encode_args, encode_value
from kadence.common import ResetPoint, RetryPolicy
from kadence.exceptions import KadenceError
from kadence_protocol import avro
from kadence_protocol.ingress_signing import IngressSigner
from kadence_protocol.kafka_security import KafkaSecurity, client_options
from kadence_protocol.kafka_stop import stop_consumer
from kadence_protocol.policies import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

# The topic names and keys are part of the public protocol (docs/protocol.md); defined there.
from kadence_protocol.topics import DLQ, HISTORY, REPLIES, REQUESTS, workflow_key

__all__ = [
    "DLQ",
    "HISTORY",
    "REPLIES",
    "REQUESTS",
    "IngressSigner",
    "KafkaIngress",
    "KafkaIngressError",
    "Reply",
    "decode_reply",
    "encode_cancel",
    "encode_reset",
    "encode_signal",
    "encode_signal_with_start",
    "encode_start",
    "encode_update",
    "workflow_key",
]


class KafkaIngressError(KadenceError):
    """No reply came in time, or a record on kadence.replies is not a Reply."""


def _request_id(request_id: str | None) -> str:
    # A request id makes a retried produce harmless: history answers it with the same run.
    return request_id if request_id is not None else uuid.uuid4().hex


def encode_start(namespace: str, workflow_id: str, workflow_type: str, task_queue: str,
                 args: Sequence[Any] = (), *, execution_timeout_ms: int = 0, run_timeout_ms: int = 0,
                 workflow_task_timeout_ms: int = 10000, request_id: str | None = None, identity: str = "",
                 reply_to: str | None = None, id_reuse_policy: WorkflowIDReusePolicy | None = None,
                 id_conflict_policy: WorkflowIDConflictPolicy | None = None,
                 memo: Mapping[str, Any] | None = None, retry_policy: RetryPolicy | None = None) -> bytes:
    """A ``StartWorkflowExecution`` record; ``args`` are the workflow's positional arguments.
    ``execution_timeout_ms`` bounds every run of a continue-as-new chain together,
    ``run_timeout_ms`` each run; the policies, memo and retry policy are those of
    ``Client.start_workflow``."""
    return avro.encode("StartWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "workflow_type": workflow_type,
        "task_queue": task_queue, "input": encode_args(args, what=f"workflow {workflow_type}"),
        "execution_timeout_ms": execution_timeout_ms,
        "workflow_task_timeout_ms": workflow_task_timeout_ms, "request_id": _request_id(request_id),
        "identity": identity, "reply_to": reply_to,
        "run_timeout_ms": run_timeout_ms, **_start_options(id_reuse_policy, id_conflict_policy, memo),
        "retry_policy": retry_policy.to_avro() if retry_policy is not None else None,
    })


def _start_options(reuse: WorkflowIDReusePolicy | None, conflict: WorkflowIDConflictPolicy | None,
                   memo: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"id_reuse_policy": WorkflowIDReusePolicy(reuse).value if reuse else "",
            "id_conflict_policy": WorkflowIDConflictPolicy(conflict).value if conflict else "",
            "memo": encode_value(dict(memo), what="memo") if memo is not None else None}


def encode_signal(namespace: str, workflow_id: str, signal_name: str, args: Sequence[Any] = (), *,
                  run_id: str | None = None, request_id: str | None = None, identity: str = "",
                  reply_to: str | None = None) -> bytes:
    """A ``SignalWorkflowExecution`` record for the open run (or ``run_id``)."""
    return avro.encode("SignalWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "run_id": run_id, "signal_name": signal_name,
        "input": encode_args(args, what=f"signal {signal_name}"), "request_id": _request_id(request_id),
        "identity": identity,
        "reply_to": reply_to,
    })


def encode_signal_with_start(namespace: str, workflow_id: str, workflow_type: str, task_queue: str,
                             signal_name: str, signal_args: Sequence[Any] = (), args: Sequence[Any] = (), *,
                             execution_timeout_ms: int = 0, run_timeout_ms: int = 0,
                             workflow_task_timeout_ms: int = 10000,
                             request_id: str | None = None, identity: str = "",
                             reply_to: str | None = None, id_reuse_policy: WorkflowIDReusePolicy | None = None,
                             memo: Mapping[str, Any] | None = None) -> bytes:
    """A ``SignalWithStartWorkflowExecution`` record: signal the open run, starting one if none is."""
    options = _start_options(id_reuse_policy, None, memo)
    del options["id_conflict_policy"]
    return avro.encode("SignalWithStartWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "workflow_type": workflow_type,
        "task_queue": task_queue, "input": encode_args(args, what=f"workflow {workflow_type}"),
        "execution_timeout_ms": execution_timeout_ms,
        "workflow_task_timeout_ms": workflow_task_timeout_ms, "signal_name": signal_name,
        "signal_input": encode_args(signal_args, what=f"signal {signal_name}"), "request_id": _request_id(request_id),
        "identity": identity, "reply_to": reply_to,
        "run_timeout_ms": run_timeout_ms, **options,
    })


def encode_cancel(namespace: str, workflow_id: str, *, run_id: str | None = None, reason: str = "",
                  request_id: str | None = None, identity: str = "", reply_to: str | None = None) -> bytes:
    """A ``RequestCancelWorkflowExecution`` record for the open run (or ``run_id``)."""
    return avro.encode("RequestCancelWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "run_id": run_id, "reason": reason,
        "request_id": _request_id(request_id), "identity": identity, "reply_to": reply_to,
    })


def encode_reset(namespace: str, workflow_id: str, to: int | ResetPoint | str = ResetPoint.LAST, *,
                 run_id: str | None = None, reason: str = "", reapply_signals: bool = True,
                 request_id: str | None = None, identity: str = "", reply_to: str | None = None) -> bytes:
    """A ``ResetWorkflowExecution`` record: reset the run (or the current one) to the workflow
    task ``to`` names (an event id of it, ``ResetPoint.FIRST`` or ``ResetPoint.LAST``); see
    ``WorkflowHandle.reset``. The reply on kadence.replies names the new run."""
    if isinstance(to, bool) or not isinstance(to, int | str):
        raise TypeError("to must be an event id or a ResetPoint")
    point, event_id = (ResetPoint.EVENT_ID, to) if isinstance(to, int) else (ResetPoint(to), 0)
    return avro.encode("ResetWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "run_id": run_id, "reset_point": point.value,
        "event_id": event_id, "reapply_signals": reapply_signals, "reason": reason,
        "request_id": _request_id(request_id), "identity": identity, "reply_to": reply_to,
    })


def encode_update(namespace: str, workflow_id: str, update_name: str, args: Sequence[Any] = (), *,
                  update_id: str | None = None, run_id: str | None = None, wait_for_stage: str = "completed",
                  request_id: str | None = None, identity: str = "", reply_to: str | None = None) -> bytes:
    """An ``UpdateWorkflowExecution`` record. An update is answered, so it is useful over Kafka
    only with ``reply_to``: the Reply's ``update_outcome`` carries the outcome once the stage
    ``wait_for_stage`` (accepted or completed) is reached, or the rejection."""
    return avro.encode("UpdateWorkflowExecution", {
        "namespace": namespace, "workflow_id": workflow_id, "run_id": run_id,
        "update_id": update_id or uuid.uuid4().hex, "update_name": update_name,
        "input": encode_args(args, what=f"update {update_name}"), "wait_for_stage": wait_for_stage,
        "request_id": _request_id(request_id), "identity": identity, "reply_to": reply_to,
    })


@dataclass(frozen=True)
class Reply:
    """The outcome of a command: ``ok`` with the run id, or the error type and message;
    ``created`` when the command started that run (a retried start of it: false)."""

    reply_to: str
    request_id: str
    ok: bool
    run_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    namespace: str | None = None
    workflow_id: str | None = None
    created: bool = False
    # An update's outcome (JSON: update_id, stage, result, failure); None for other requests.
    update_outcome: str | None = None


def decode_reply(data: bytes) -> Reply:
    name, record = avro.decode(data)
    if name != "Reply":
        raise KafkaIngressError(f"expected a Reply on {REPLIES}, got a {name}")
    return Reply(**record)


# The largest record KafkaIngress sends: a command with every payload at history's limit (2 MiB
# each: input, memo, search attributes, a signal-with-start's signal input) and its ids. A field
# over its limit is history's to refuse, with a reply; a record over the broker's own limit
# (message.max.bytes) the broker's, with MessageSizeTooLargeError. aiokafka's default, 1 MiB,
# refused in the client a payload history takes.
MAX_RECORD_BYTES = 9 * 1024 * 1024


class KafkaIngress:
    """An aiokafka producer for commands plus a reader of their replies.

    ``async with KafkaIngress("127.0.0.1:9092") as ingress:
    reply = await ingress.start_workflow("default", "wf-1", "Greet", "q", ["world"])``

    ``security``: TLS/SASL of the connection (None: ``$KADENCE_KAFKA_*``, kadence_protocol/kafka_security.py).
    ``signer``: signs every command for namespaces that require signed ingress (None:
    ``$KADENCE_INGRESS_PRINCIPAL`` and ``$KADENCE_INGRESS_KEY`` if set; see kadence_protocol/ingress_signing.py).
    """

    def __init__(self, bootstrap: str, *, reply_to: str | None = None, reply_timeout: float = 30.0,
                 security: KafkaSecurity | None = None, signer: IngressSigner | None = None) -> None:
        self.reply_to = reply_to or f"ingress-{uuid.uuid4().hex[:12]}"
        self.reply_timeout = reply_timeout
        self.signer = signer if signer is not None else IngressSigner.from_env()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_RECORD_BYTES,
                                          **client_options(security))
        self._replies = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         fetch_max_wait_ms=50, **client_options(security))
        # Per request id, its commands waiting for a reply, oldest first: a command sent again
        # with its request id while the first waits (a retry) gets a reply of its own.
        self._waiting: dict[str, list[asyncio.Future[Reply]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaIngress:
        await self._producer.start()
        try:
            await self._read_replies_from_the_end()
        except BaseException:
            # A started producer (or a consumer half started) would retry its broker for ever.
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _read_replies_from_the_end(self) -> None:
        await self._replies.start()
        await self._replies.topics()
        partitions = self._replies.partitions_for_topic(REPLIES) or {0}
        tps = [TopicPartition(REPLIES, p) for p in sorted(partitions)]
        self._replies.assign(tps)
        await self._replies.seek_to_end(*tps)
        for tp in tps:
            # Resolve the position now: a reply to a command sent next must not be skipped.
            await self._replies.position(tp)
        self._reader = asyncio.create_task(self._read_replies())

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        try:
            await stop_consumer(self._replies)
        finally:
            await self._producer.stop()

    async def _read_replies(self) -> None:
        async for record in self._replies:
            if record.key != self.reply_to.encode() or record.value is None:
                continue
            reply = decode_reply(record.value)
            for future in self._waiting.get(reply.request_id, ()):
                if not future.done():
                    future.set_result(reply)
                    break

    async def send(self, namespace: str, workflow_id: str, value: bytes, request_id: str) -> Reply:
        """Produce an encoded command (its ``reply_to`` must be ours) and wait for its reply."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(request_id, [])
        waiting.append(future)
        try:
            key = workflow_key(namespace, workflow_id)
            headers = self.signer.headers(REQUESTS, key, value) if self.signer is not None else None
            await self._producer.send_and_wait(REQUESTS, value, key=key, headers=headers)
            return await asyncio.wait_for(future, self.reply_timeout)
        except TimeoutError:
            raise KafkaIngressError(f"no reply to request {request_id} within {self.reply_timeout} s") from None
        finally:
            waiting.remove(future)
            if not waiting and self._waiting.get(request_id) is waiting:
                del self._waiting[request_id]

    async def start_workflow(self, namespace: str, workflow_id: str, workflow_type: str, task_queue: str,
                             args: Sequence[Any] = (), **options: Any) -> Reply:
        request_id = _request_id(options.pop("request_id", None))
        value = encode_start(namespace, workflow_id, workflow_type, task_queue, args, request_id=request_id,
                             reply_to=self.reply_to, **options)
        return await self.send(namespace, workflow_id, value, request_id)

    async def signal_workflow(self, namespace: str, workflow_id: str, signal_name: str,
                              args: Sequence[Any] = (), **options: Any) -> Reply:
        request_id = _request_id(options.pop("request_id", None))
        value = encode_signal(namespace, workflow_id, signal_name, args, request_id=request_id,
                              reply_to=self.reply_to, **options)
        return await self.send(namespace, workflow_id, value, request_id)

    async def signal_with_start(self, namespace: str, workflow_id: str, workflow_type: str, task_queue: str,
                                signal_name: str, signal_args: Sequence[Any] = (), args: Sequence[Any] = (),
                                **options: Any) -> Reply:
        request_id = _request_id(options.pop("request_id", None))
        value = encode_signal_with_start(namespace, workflow_id, workflow_type, task_queue, signal_name,
                                         signal_args, args, request_id=request_id, reply_to=self.reply_to,
                                         **options)
        return await self.send(namespace, workflow_id, value, request_id)

    async def cancel_workflow(self, namespace: str, workflow_id: str, **options: Any) -> Reply:
        """Ask the open run (or ``run_id=``) to cancel; ``reason=`` is recorded with the request."""
        request_id = _request_id(options.pop("request_id", None))
        value = encode_cancel(namespace, workflow_id, request_id=request_id, reply_to=self.reply_to, **options)
        return await self.send(namespace, workflow_id, value, request_id)

    async def reset_workflow(self, namespace: str, workflow_id: str, to: int | ResetPoint | str = ResetPoint.LAST,
                             **options: Any) -> Reply:
        """Reset the run (or ``run_id=``) to the workflow task ``to`` names (see
        ``encode_reset``); ``Reply.run_id`` is the new run, ``error_type`` InvalidResetPoint
        says why a reset could not be made."""
        request_id = _request_id(options.pop("request_id", None))
        value = encode_reset(namespace, workflow_id, to, request_id=request_id, reply_to=self.reply_to, **options)
        return await self.send(namespace, workflow_id, value, request_id)

    async def update_workflow(self, namespace: str, workflow_id: str, update_name: str, args: Sequence[Any] = (),
                              **options: Any) -> Reply:
        """Run an update (``update_id=``, ``wait_for_stage=`` accepted | completed, ``run_id=``)
        and wait for its Reply; ``Reply.update_outcome`` holds the outcome as JSON (its
        ``run_id`` is the run that answered: name it when asking again). The reply comes when
        the stage is reached, so wait with a timeout as long as the update takes. ``error_type``
        UpdateInEarlierRun: a run the workflow continued from accepted this update id, or a
        reset moved it from the run asked to a new one (``Reply.run_id``); ask that run
        (``run_id=``), which answers its outcome."""
        request_id = _request_id(options.pop("request_id", None))
        value = encode_update(namespace, workflow_id, update_name, args, request_id=request_id,
                              reply_to=self.reply_to, **options)
        return await self.send(namespace, workflow_id, value, request_id)
