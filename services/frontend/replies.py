"""Answers from history to this frontend's commands, read from ``kadence.replies``.

Every frontend reads every partition without a consumer group, starting at the end
when it starts (older replies were meant for earlier instances), and keeps only the
replies addressed to its own ``instance_id``.

It also tells ``/health`` whether history answers (:meth:`ReplyRouter.health`): a command
waiting for longer than ``unanswered_after_s`` (``KADENCE_HEALTH_UNANSWERED_MS``, 10 s by
default) while no reply at all came in that time
(to this frontend or another: any reply shows a history process at work) makes the
frontend's answer ``degraded``. An idle frontend (nothing waiting) has no evidence either
way and says ``ok``; the first reply clears it. So it does not flap with the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from kadence_protocol import avro
from kadence_protocol.kafka_security import KafkaSecurity, client_options
from kadence_protocol.kafka_stop import stop_consumer
from services.common import outage, unreadable
from services.common.aio import cancel
from services.common.config import Settings
from services.common.health import HealthReport
from services.common.kafka import REPLIES
from services.common.supervision import Fatal, watch

log = logging.getLogger(__name__)

# A start's reply comes in milliseconds when history is up; a shard being taken over after
# a crash answers within its session timeout (seconds). Past this, say so on /health.
UNANSWERED_AFTER_S = Settings.health_unanswered_ms / 1000


class Target(NamedTuple):
    """The workflow a command names: a request id is only unique within it (history's ledger
    keys request ids by namespace, workflow id and request id), so two workflows' commands
    may share one, and a reply is routed by both."""

    namespace: str
    workflow_id: str


class _Waiter(NamedTuple):
    target: Target | None  # None: any reply carrying the request id
    future: asyncio.Future[dict[str, Any]]
    since: float  # time.monotonic() when the caller started waiting


class ReplyRouter:
    def __init__(self, bootstrap: str, instance_id: str, fetch_wait_ms: int = 10,
                 security: KafkaSecurity | None = None, *, reply_to: str | None = None,
                 unanswered_after_s: float = UNANSWERED_AFTER_S) -> None:
        if unanswered_after_s <= 0:
            raise ValueError(f"unanswered_after_s must be positive, got {unanswered_after_s}")
        self._unanswered_after_s = unanswered_after_s
        # What this frontend's commands name as reply_to: its instance id, with its internal
        # address when it takes reply notices (services/common/reply_notices.py).
        self._instance_id = reply_to or instance_id
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            client_id=f"frontend-replies-{instance_id}",
            fetch_max_wait_ms=fetch_wait_ms,
            metadata_max_age_ms=5000, **client_options(security),
        )
        # Per request id, one future per caller waiting for it: calls carrying the same
        # request id at once (a client retrying while its first call is still out) each get
        # the answer, and each call's clean-up removes only its own future. A reply answers
        # only the callers whose command named its workflow.
        self._waiters: dict[str, list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        # Per partition, the offset after the last record read: where to read again from
        # after a fetch failed on a record the client cannot unpack (unreadable.py).
        self._given: dict[TopicPartition, int] = {}
        self._last_reply: float | None = None  # time.monotonic() of the last reply read

    def health(self, now: float | None = None) -> HealthReport:
        """Whether history answers this frontend's commands (always healthy: the frontend
        still serves reads and queues nothing it cannot; ``degraded`` says starts wait)."""
        now = time.monotonic() if now is None else now
        oldest = min((w.since for ws in self._waiters.values() for w in ws if not w.future.done()), default=None)
        waited = 0.0 if oldest is None else now - oldest
        after = self._unanswered_after_s
        quiet = self._last_reply is None or now - self._last_reply >= after
        degraded = waited >= after and quiet
        return HealthReport(True, {
            "status": "degraded" if degraded else "ok",
            "waiting": sum(len(ws) for ws in self._waiters.values()),
            "oldest_waiting_ms": int(waited * 1000),
            "last_reply_ms_ago": None if self._last_reply is None else int((now - self._last_reply) * 1000),
        }, degraded=degraded)

    async def start(self, fatal: Fatal | None = None) -> None:
        """Start reading; if the reading task ever dies, ``fatal`` is declared."""
        await self._consumer.start()
        try:
            await self._consumer.topics()  # loads metadata so the partitions are known
            parts = self._consumer.partitions_for_topic(REPLIES) or {0}
            tps = [TopicPartition(REPLIES, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            await self._consumer.seek_to_end(*tps)
            for tp in tps:
                # Resolve the end offset now, so a reply to the first command is not skipped.
                self._given[tp] = await self._consumer.position(tp)
        except BaseException:
            await stop_consumer(self._consumer)
            raise
        self._task = asyncio.create_task(self._run(), name="frontend-replies")
        if fatal is not None:
            watch(self._task, "the frontend's replies consumer", fatal)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        with contextlib.suppress(KafkaError):
            await stop_consumer(self._consumer)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.future.cancel()
        self._waiters.clear()

    def expect(self, request_id: str, target: Target | None = None) -> asyncio.Future[dict[str, Any]]:
        """Register interest before the command is produced, so the reply cannot be missed.
        ``target`` is the workflow the command names: only a reply for it answers the call.

        Every call gets a future of its own; hand it back to :meth:`forget` when done."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(request_id, []).append(_Waiter(target, fut, time.monotonic()))
        return fut

    def forget(self, request_id: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        """Drop this caller's future (answered or not); other callers' stay."""
        waiters = self._waiters.get(request_id)
        if waiters is None:
            return
        waiters[:] = [w for w in waiters if w.future is not fut]
        if not waiters:
            del self._waiters[request_id]

    async def _run(self) -> None:
        backoff = outage.Backoff(f"reading {REPLIES}", log)
        while True:
            try:
                try:
                    batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
                except unreadable.UNREADABLE_ERRORS:
                    # A record the client cannot unpack fails every fetch of its partition:
                    # read past it (it is logged, naming its offset) and go on.
                    if not await unreadable.isolate(self._consumer, self._given, self._take):
                        await asyncio.sleep(0.1)  # not found (the partition was slow to answer): no busy loop
                    continue
            except KafkaError as exc:
                await backoff.wait(exc)
                continue
            backoff.recovered()
            for tp, records in batch.items():
                await self._take(tp, records)

    async def _take(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            self._deliver(rec.value)  # an Unreadable record has none
        if records:
            self._given[tp] = records[-1].offset + 1

    def _deliver(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            name, reply = avro.decode(value)
        except avro.DecodeError as exc:
            # Every frontend reads every reply; dead-lettering here would multiply it.
            log.warning("skipping an unreadable record on %s: %s", REPLIES, exc)
            return
        if name == "Reply":
            self.deliver([reply])

    def deliver(self, replies: list[dict[str, Any]]) -> None:
        """Answer the waiters of these replies (those addressed to this frontend)."""
        if replies:
            self._last_reply = time.monotonic()  # to any frontend: history is at work
        for reply in replies:
            if reply.get("reply_to") != self._instance_id:
                continue
            # One reply answers every caller waiting for its request id in its workflow:
            # history applies a request once, and answers a repeat the same way.
            waiters = self._waiters.get(reply["request_id"])
            if waiters is None:
                continue
            target = _target_of(reply)
            waiting = []
            for waiter in waiters:
                if target is not None and waiter.target not in (None, target):
                    waiting.append(waiter)  # another workflow's command with this request id
                elif not waiter.future.done():
                    waiter.future.set_result(reply)
            if waiting:
                self._waiters[reply["request_id"]] = waiting
            else:
                del self._waiters[reply["request_id"]]


def _target_of(reply: dict[str, Any]) -> Target | None:
    """The workflow a reply answers for; None from a writer whose replies did not name it."""
    namespace, workflow_id = reply.get("namespace"), reply.get("workflow_id")
    if isinstance(namespace, str) and isinstance(workflow_id, str):
        return Target(namespace, workflow_id)
    return None
