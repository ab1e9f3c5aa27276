"""Reply notices: history's outbox relay tells the frontend named by a reply's ``reply_to`` of
the reply it just published, so a command's caller need not wait for the reply consumer's fetch.

Between processes a reply reaches its frontend through ``kadence.replies``, read by every
frontend with a fetch wait (``KADENCE_REPLIES_FETCH_WAIT_MS``) that each start, signal or
cancel answered waited out. A frontend taking reply notices serves ``POST /internal/replies``
(its internal address, on ``KADENCE_FRONTEND_INTERNAL_HOST``) and names it in the
``reply_to`` of its commands as ``<instance id> <address>`` (the same form as history's
``shards.owner``, command_notices.py). Right after each commit, while the outbox relay
publishes them, history sends each such frontend the Reply records addressed to it.

The address in a ``reply_to`` is vouched for: a ``reply_to`` is the caller's to choose on a
command produced straight to ``kadence.requests``, and a notice carries the internal key, so
history must never send one to an address a tenant named. A frontend names
``<instance id> <address> <tag>`` (:func:`reply_to_of`), the tag an HMAC of the other two under
``KADENCE_INTERNAL_KEY``; history sends notices only to a plain ``http(s)://host:port`` whose tag
verifies (:func:`vouched_address`), and without a key (anyone could compute the tag) only to a
loopback IP address. Any other ``reply_to`` is answered through ``kadence.replies`` alone.

A notice is a hint, never the record: the reply is published as before, and the frontend's
reply consumer still reads it; a waiter is answered once whichever comes first
(``ReplyRouter.deliver`` pops it), and a reply nobody waits for any more is ignored. Sending
never blocks the relay: at most ``MAX_IN_FLIGHT`` requests are out, notices past that, or
that fail or take longer than ``NOTICE_TIMEOUT_S``, are dropped (counted).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from services.common import internal_auth
from services.common.kafka import REPLIES, Published, Record
from services.common.notice_queue import NoticeQueue

log = logging.getLogger(__name__)

PATH = "/internal/replies"
MAX_IN_FLIGHT = 64  # frontends with a request out; beyond, notices are dropped (they are hints)
NOTICE_TIMEOUT_S = 1.0  # later than this, the reply consumer has it
TAG_CHARS = 32  # of the hex HMAC-SHA256 vouching for a reply_to's address (128 bits)
CHECKED_MAX = 4096  # reply_to values whose verdict is remembered (cleared when full)


def _tag(instance_id: str, address: str, internal_key: str) -> str:
    message = f"kadence reply notices\0{instance_id}\0{address}".encode()
    return hmac.digest(internal_key.encode(), message, "sha256").hex()[:TAG_CHARS]


def reply_to_of(instance_id: str, address: str, internal_key: str) -> str:
    """The reply_to of a frontend taking reply notices at ``address``."""
    return f"{instance_id} {address} {_tag(instance_id, address, internal_key)}"


def _plain_url(address: str) -> bool:
    """``http(s)://host:port`` and nothing more: no credentials, path, query or fragment."""
    try:
        url = urlsplit(address)
        port = url.port
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and port is not None and url.username is None
            and url.password is None and url.path == "" and not url.query and not url.fragment)


def _loopback_ip(address: str) -> bool:
    try:
        return ipaddress.ip_address(urlsplit(address).hostname or "").is_loopback
    except ValueError:
        return False  # a host name: not resolved here (the commit path must not wait on DNS)


def vouched_address(reply_to: str, internal_key: str) -> str | None:
    """The address to send ``reply_to``'s notices to, if a frontend holding the key named it
    (:func:`reply_to_of`); None for any other reply_to (a tenant's, or an older frontend's)."""
    parts = reply_to.rsplit(" ", 2)
    if len(parts) != 3:
        return None
    instance_id, address, tag = parts
    if not _plain_url(address) or not hmac.compare_digest(tag, _tag(instance_id, address, internal_key)):
        return None
    if not internal_key and not _loopback_ip(address):
        return None
    return address


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
    unvouched: int = 0  # reply_to values naming an address no frontend vouched for: never sent to


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
        self._key = internal_key
        self._checked: dict[bytes, str | None] = {}  # reply_to -> its vouched address (or None)
        self.counts = ReplyCounts()

    def _address(self, reply_to: bytes) -> str | None:
        try:
            return self._checked[reply_to]
        except KeyError:
            pass
        if len(self._checked) >= CHECKED_MAX:
            self._checked.clear()
        address = self._checked[reply_to] = vouched_address(reply_to.decode(errors="replace"), self._key)
        if address is None and b"://" in reply_to:
            self.counts.unvouched += 1
            # Debug: a tenant varying its reply_to must not flood the log (the count tells).
            log.debug("reply_to %r names an address no frontend vouched for: its replies go by %s alone",
                        reply_to[:200], REPLIES)
        return address

    def covers(self, topic: str, key: bytes | None) -> bool:
        return topic == REPLIES and bool(key) and self._address(key or b"") is not None

    def committed(self, records: Sequence[Record], updates: TaskUpdates = NO_UPDATES) -> None:
        """Tell each frontend the replies of a commit addressed to it (history/notices.py CommitNotices)."""
        by_frontend: dict[str, list[bytes]] = {}
        for topic, key, value, _ in records:
            if topic == REPLIES and key and (address := self._address(key)) is not None:
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
