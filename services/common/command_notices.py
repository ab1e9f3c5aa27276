"""Command notices: a frontend tells history's owner of a partition of each command the
broker has just acknowledged there, so the shard need not wait for its fetch.

Between processes a command reaches its shard through ``kadence.requests``, and with the
development broker (which answers a fetch only when its wait ends) each command waited out
history's fetch. Once the broker acknowledges a command, :class:`NoticedCommands` (the
frontend's command bus between processes) sends the record as the broker holds it
(partition, offset, key, value, headers) to the history instance that owns the partition,
over history's internal HTTP API. History offers it to the shard's intake exactly as a
co-located frontend's acknowledged command is offered (``Intake.offer``): taken only if it is
the very next offset, otherwise dropped and left to the fetch (docs/colocation.md).

A notice is a hint. Sending never blocks a command: one request per partition is out at a
time (so a partition's notices arrive in offset order), the notices acknowledged meanwhile
go in the next one, at most ``MAX_PENDING`` wait per partition, and a request that fails
or takes longer than ``NOTICE_TIMEOUT_S`` is dropped (counted). History's owner is read
from ``shards.owner``, which a history instance serving notices names as
``<instance id> <internal address>`` (:func:`owner_name`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from services.common import internal_auth, outage
from services.common.colocation import CommandBus, Headers
from services.common.validation import Limits

log = logging.getLogger(__name__)

PATH = "/internal/commands"  # history's endpoint taking notices
MAX_PENDING = 500  # notices waiting per partition behind a request out; beyond, dropped
NOTICE_TIMEOUT_S = 1.0  # a notice later than this is worth nothing: the fetch has the command by then
OWNER_TTL_S = 2.0  # how long an owner lookup is trusted
OWNER_RETRY_S = 0.2  # after a failure, how soon the owners are read again (at most)


def owner_name(instance_id: str, address: str) -> str:
    """What a history instance writes to ``shards.owner``: its id, and the address of its
    internal API when it serves one."""
    return f"{instance_id} {address}" if address else instance_id


def owner_address(owner: str) -> str | None:
    """The internal address in a ``shards.owner``, if the owner serves one."""
    _, sep, address = owner.rpartition(" ")
    return address if sep and address.startswith(("http://", "https://")) else None


@dataclass(frozen=True, slots=True)
class CommandNotice:
    """One command as the broker holds it on ``kadence.requests``."""

    offset: int
    key: bytes
    value: bytes
    headers: Headers = ()

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "key": _b64(self.key), "value": _b64(self.value),
                "headers": [[k, _b64(v)] for k, v in self.headers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandNotice:
        offset = int(data["offset"])
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        return cls(offset, _unb64(data["key"]), _unb64(data["value"]),
                   tuple((str(k), _unb64(v)) for k, v in data.get("headers") or ()))


def notices_to_json(partition: int, notices: Sequence[CommandNotice]) -> dict[str, Any]:
    return {"partition": partition, "commands": [n.to_json() for n in notices]}


def notices_from_json(data: dict[str, Any]) -> tuple[int, list[CommandNotice]]:
    """Raises ValueError, KeyError or TypeError on a body that is not a notice request."""
    partition = int(data["partition"])
    if partition < 0:
        raise ValueError(f"partition {partition} is negative")
    return partition, [CommandNotice.from_json(c) for c in data.get("commands") or ()]


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    """What history did with one request's notices."""

    offered: int = 0  # offered to the shard (taken if next, else left to the fetch)
    not_owned: int = 0  # no running shard of that partition here: left to its owner's fetch


@dataclass
class SentCounts:
    """What became of the frontend's notices."""

    sent: int = 0  # notices answered by the owner
    not_owned: int = 0  # answered, but the instance no longer owns the partition
    failed: int = 0  # notices in requests that failed (no owner known, owner down, refused, timeout)
    dropped: int = 0  # not sent: MAX_PENDING were waiting already


class NoticeFailed(Exception):
    """A notice request that did not reach history's owner, or that it refused."""


class HistoryOwners:
    """Per ``kadence.requests`` partition, the internal address of its history owner."""

    def __init__(self, pool: asyncpg.Pool, internal_key: str = "") -> None:
        self._pool = pool
        self._headers = internal_auth.headers(internal_key)
        self._addresses: dict[int, str] = {}
        self._read_at = -OWNER_TTL_S
        self._ttl = OWNER_TTL_S
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def address(self, partition: int) -> str | None:
        now = asyncio.get_running_loop().time()
        if now - self._read_at > self._ttl:
            with contextlib.suppress(*outage.DATABASE_ERRORS):
                rows = await self._pool.fetch("SELECT shard_id, owner FROM shards")
                self._addresses = {r["shard_id"]: a for r in rows if (a := owner_address(r["owner"])) is not None}
                self._read_at, self._ttl = now, OWNER_TTL_S
        return self._addresses.get(partition)

    def forget(self) -> None:
        """Look the owners up again soon (after a failure), but not for every notice: with no
        history serving notices, every notice fails."""
        self._ttl = OWNER_RETRY_S

    async def notify(self, partition: int, notices: Sequence[CommandNotice], timeout: float) -> NoticeOutcome:
        address = await self.address(partition)
        if address is None:
            raise NoticeFailed(f"no history instance serving notices owns partition {partition}")
        if self._closed:
            raise NoticeFailed("closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(address + PATH, json=notices_to_json(partition, notices),
                                          headers=self._headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                data: dict[str, Any] = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise NoticeFailed(f"history at {address} failed: {exc!r}") from exc
        if status != 200:
            raise NoticeFailed(f"history at {address} answered {status}: {data.get('message', '')}")
        return NoticeOutcome(int(data.get("offered", 0)), int(data.get("not_owned", 0)))

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class _Partition:
    pending: list[CommandNotice] = field(default_factory=list)
    sending: asyncio.Task[None] | None = None


class NoticedCommands:
    """The command bus between processes with notices: ``inner`` (the broker side, traced
    or not) and, once the broker acknowledges a command, a notice to history's owner."""

    def __init__(self, inner: CommandBus, owners: HistoryOwners, *, max_pending: int = MAX_PENDING,
                 timeout: float = NOTICE_TIMEOUT_S) -> None:
        self.inner = inner
        self._owners = owners
        self._max_pending = max_pending
        self._timeout = timeout
        self._partitions: dict[int, _Partition] = {}
        self._closed = False
        self.colocated = inner.colocated  # False: history is elsewhere
        self.counts = SentCounts()

    def headers(self) -> Headers:
        return self.inner.headers()

    def queued(self, partition: int, key: bytes, value: bytes, headers: Headers,
               acked: asyncio.Future[Any], checked: Limits | None = None) -> None:
        # A notice goes to history in another process, which checks the record itself.
        self.inner.queued(partition, key, value, headers, acked, checked)
        acked.add_done_callback(lambda f: self._acked(partition, key, value, headers, f))

    def _acked(self, partition: int, key: bytes, value: bytes, headers: Headers, acked: asyncio.Future[Any]) -> None:
        if self._closed or acked.cancelled() or acked.exception() is not None:
            return  # not on the broker: nothing to tell
        p = self._partitions.setdefault(partition, _Partition())
        if len(p.pending) >= self._max_pending:
            self.counts.dropped += 1
            return
        p.pending.append(CommandNotice(acked.result().offset, key, value, headers))
        if p.sending is None:
            # Acknowledgements of one produce batch arrive in one go: sent in one request.
            p.sending = asyncio.get_running_loop().create_task(self._send(partition, p))

    async def _send(self, partition: int, p: _Partition) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this produce batch's acknowledgements join
            while p.pending and not self._closed:
                notices, p.pending = p.pending, []
                try:
                    outcome = await self._owners.notify(partition, notices, self._timeout)
                except NoticeFailed as exc:
                    # A hint lost: history's fetch delivers the commands.
                    self.counts.failed += len(notices)
                    self._owners.forget()
                    log.debug("command notice for partition %d not taken: %s", partition, exc)
                    continue
                self.counts.sent += outcome.offered
                self.counts.not_owned += outcome.not_owned
                if outcome.not_owned:
                    self._owners.forget()
        finally:
            p.sending = None

    async def close(self) -> None:
        self._closed = True
        tasks = [p.sending for p in self._partitions.values() if p.sending is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._owners.close()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(text, validate=True)
