"""Reply notices: history's outbox relay tells the frontend named by a reply's ``reply_to`` of
the reply it just published, so a command's caller need not wait for the reply consumer's fetch.

Between processes a reply reaches its frontend through ``kadence.replies``, read by every
frontend with a fetch wait (``KADENCE_REPLIES_FETCH_WAIT_MS``) that each start, signal or
cancel answered waited out. A frontend taking reply notices serves ``POST /internal/replies``
(its internal address, on ``KADENCE_FRONTEND_INTERNAL_HOST``) and names it in the
``reply_to`` of its commands as ``<instance id> <address>`` (the same form as history's
``shards.owner``, command_notices.py). Right after each commit, while the outbox relay
publishes them, history sends each such frontend the Reply records addressed to it.

A notice is a hint, never the record: the reply is published as before, and the frontend's
reply consumer still reads it; a waiter is answered once whichever comes first
(``ReplyRouter.deliver`` pops it), and a reply nobody waits for any more is ignored. Sending
never blocks the relay: at most ``MAX_IN_FLIGHT`` requests are out, notices past that, or
that fail or take longer than ``NOTICE_TIMEOUT_S``, are dropped (counted).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from services.common import internal_auth
from services.common.command_notices import owner_address
from services.common.kafka import REPLIES, Published, Record
from services.common.notice_queue import NoticeQueue

log = logging.getLogger(__name__)

PATH = "/internal/replies"
MAX_IN_FLIGHT = 64  # frontends with a request out; beyond, notices are dropped (they are hints)
NOTICE_TIMEOUT_S = 1.0  # later than this, the reply consumer has it


def replies_to_json(values: Sequence[bytes]) -> dict[str, Any]:
    return {"replies": [base64.b64encode(v).decode() for v in values]}


def replies_from_json(data: dict[str, Any]) -> list[bytes]:
    """The Avro records of a notice; raises ValueError or TypeError on a body that is not one."""
    values = data.get("replies")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("replies must be a list of base64 strings")
    return [base64.b64decode(v, validate=True) for v in values]


# Per task record the relay published (its value): the update requests waiting in its run as
# of the commit that wrote it (history's summary.waiting_updates); a record not in it: not known.
TaskUpdates = Mapping[bytes, Sequence[Mapping[str, Any]]]
NO_UPDATES: TaskUpdates = {}


class Notices(Protocol):
    """What the relay tells of what it published (services/history/notices.py TaskNotices)."""

    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: TaskUpdates = NO_UPDATES) -> None: ...

    async def close(self) -> None: ...


class BothNotices:
    """Tell two of them: task notices and reply notices."""

    def __init__(self, first: Notices, second: Notices) -> None:
        self.first, self.second = first, second

    def published(self, records: Sequence[Record], where: Sequence[Published],
                  updates: TaskUpdates = NO_UPDATES) -> None:
        self.first.published(records, where, updates)
        self.second.published(records, where, updates)

    async def close(self) -> None:
        await self.first.close()
        await self.second.close()


@dataclass
class ReplyCounts:
    sent: int = 0  # requests the frontend answered
    failed: int = 0  # requests that failed (frontend gone, refused, timeout)
    dropped: int = 0  # replies not sent: too many waiting or out already


class ReplyNotices:
    """Reply notices over frontends' internal API: per frontend one request out at a time, the
    replies of the commits made meanwhile together in the next (notice_queue.py)."""

    def __init__(self, internal_key: str = "", *, max_in_flight: int = MAX_IN_FLIGHT,
                 timeout: float = NOTICE_TIMEOUT_S) -> None:
        self._headers = internal_auth.headers(internal_key)
        self._timeout = timeout
        self._queue: NoticeQueue[str, bytes] = NoticeQueue(self._send, max_destinations=max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.counts = ReplyCounts()

    def covers(self, topic: str, key: bytes | None) -> bool:
        return topic == REPLIES and bool(key) and owner_address((key or b"").decode(errors="replace")) is not None

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        """Tell each frontend the replies of a commit addressed to it (history/notices.py CommitNotices)."""
        by_frontend: dict[str, list[bytes]] = {}
        for topic, key, value, _ in records:
            if topic == REPLIES and key and (address := owner_address(key.decode(errors="replace"))) is not None:
                by_frontend.setdefault(address, []).append(value)
        if self._closed:
            return
        for address, values in by_frontend.items():
            self._queue.add(address, values)
        self.counts.dropped = self._queue.dropped

    async def _send(self, address: str, values: list[bytes]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(address + PATH, json=replies_to_json(values), headers=self._headers,
                                          timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # A hint lost: the frontend's reply consumer delivers the replies.
            self.counts.failed += 1
            log.debug("reply notice to %s not taken: %r", address, exc)
            return
        if status != 200:
            self.counts.failed += 1
            log.debug("reply notice to %s refused: %d", address, status)
            return
        self.counts.sent += 1

    async def close(self) -> None:
        self._closed = True
        await self._queue.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
