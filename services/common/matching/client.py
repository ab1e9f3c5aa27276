"""How a frontend (or any service) reaches the matching owner of a task queue.

A local ``MatchingService`` that owns the partition is called directly; otherwise the
owner's internal address comes from ``matching_owners`` (cached briefly, looked up
again after any failure) and the call goes over HTTP. A poll for a partition with no
reachable owner keeps looking until its wait runs out and then returns no tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import asyncpg

from services.common import internal_auth, outage
from services.common.kafka import partition_for, task_queue_key

from .errors import (
    MatchingError,
    MatchingUnavailableError,
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)
from .notices import TaskNotice, notices_to_json
from .query_scope import QueryScope
from .stats import QueueStats
from .tasks import MatchedTask

log = logging.getLogger(__name__)

_OWNER_TTL = 2.0          # seconds an owner lookup is trusted
_RETRY_PAUSE = 0.2        # seconds between attempts while no owner answers


@dataclass(frozen=True)
class Owner:
    """The matching instance that owns a task-queue partition (matching_owners)."""

    partition: int
    address: str
    owner: str


class LocalMatchingService(Protocol):
    """What the client calls directly of a matching service in this process (MatchingService)."""

    @property
    def address(self) -> str: ...

    def owns(self, partition: int) -> bool: ...

    async def poll(self, namespace: str, task_queue: str, kind: str, max_tasks: int, wait_seconds: float,
                   identity: str, released: Callable[[], bool] | None = None) -> list[MatchedTask]: ...

    async def query(self, namespace: str, task_queue: str, workflow_id: str, run_id: str, query_type: str,
                    args_json: str | None, timeout: float, *, workflow_type: str = "") -> str | None: ...

    def respond_query(self, query_id: str, result_json: str | None = None,
                      failure: dict[str, Any] | None = None, *, scope: QueryScope | None = None) -> None: ...

    def wake_polls(self) -> None: ...

    def queue_stats(self, namespace: str | None = None) -> Sequence[QueueStats]: ...

    def describe_queue(self, namespace: str, task_queue: str) -> list[QueueStats]: ...


class MatchingClient:
    def __init__(
        self, pool: asyncpg.Pool, task_partitions: int, *, local: LocalMatchingService | None = None,
        internal_key: str = "",
    ) -> None:
        """``internal_key``: KADENCE_INTERNAL_KEY, sent to the matching instances' internal API."""
        self._headers = internal_auth.headers(internal_key)
        self._pool = pool
        self._partitions = task_partitions
        self._local = local
        self._releasing = False
        self._owners: dict[int, Owner] = {}
        self._owners_at = float("-inf")
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def local(self) -> LocalMatchingService | None:
        """The matching service in this process, if any (the web UI reads its queue stats)."""
        return self._local

    def release_polls(self) -> None:
        """Its frontend is shutting down: answer this client's polls waiting in this process's
        matching now, and end the others when they next look for an owner (one already waiting
        in a matching elsewhere ends with its wait or its shutdown). The matching itself goes
        on serving other callers; :meth:`resume_polls` undoes this for a frontend started again."""
        self._releasing = True
        if self._local is not None:
            self._local.wake_polls()

    def resume_polls(self) -> None:
        """Polls wait again (its frontend started again in the same process, as a Cluster's can)."""
        self._releasing = False

    def _released(self) -> bool:
        return self._releasing

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            # A call racing the shutdown would otherwise open a session nobody closes.
            raise MatchingUnavailableError("the matching client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def partition_of(self, namespace: str, task_queue: str) -> int:
        return partition_for(task_queue_key(namespace, task_queue), self._partitions)

    def partition_of_key(self, key: bytes) -> int:
        """The task partition of a record keyed ``key`` (kafka.task_queue_key)."""
        return partition_for(key, self._partitions)

    async def _owner(self, partition: int, *, refresh: bool = False) -> Owner | None:
        loop = asyncio.get_running_loop()
        if refresh or loop.time() - self._owners_at > _OWNER_TTL or partition not in self._owners:
            with contextlib.suppress(*outage.DATABASE_ERRORS):
                self._owners = await self._read_owners()
                self._owners_at = loop.time()
        return self._owners.get(partition)

    async def _read_owners(self) -> dict[int, Owner]:
        rows = await self._pool.fetch("SELECT partition, address, owner FROM matching_owners")
        return {r["partition"]: Owner(r["partition"], r["address"], r["owner"]) for r in rows}

    async def _call(self, owner: Owner, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST to an owner; raise the matching error its answer names."""
        try:
            async with self._http().post(
                owner.address + path, json=body, timeout=aiohttp.ClientTimeout(total=timeout), headers=self._headers,
            ) as resp:
                data: dict[str, Any] = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MatchingUnavailableError(f"matching owner {owner.address} failed: {exc!r}") from exc
        if status == 200:
            return data
        error, message = str(data.get("error", "")), str(data.get("message", ""))
        if error == "NotOwner":
            raise NotOwnerError(owner.partition)
        if error == "QueryFailed":
            raise QueryFailedError(dict(data.get("failure") or {"message": message}))
        if error == "NoPoller":
            err = NoPollerError(str(body.get("task_queue", "")), float(body.get("timeout", 0)))
            err.args = (message,)
            raise err
        if error == "QueryTimeout":
            raise QueryTimeoutError(message)
        if error == "UnknownQuery":
            raise UnknownQueryError(str(body.get("query_id", "")))
        raise MatchingError(f"matching answered {status}: {message or data}")

    # -- the operations --------------------------------------------------------------------

    async def poll(
        self, namespace: str, task_queue: str, kind: str, max_tasks: int = 1,
        wait_seconds: float = 60.0, identity: str = "",
    ) -> list[MatchedTask]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_seconds)
        partition = self.partition_of(namespace, task_queue)
        refresh = False
        while not self._releasing:
            remaining = deadline - loop.time()
            if self._local is not None and self._local.owns(partition):
                try:
                    return await self._local.poll(namespace, task_queue, kind, max_tasks, remaining, identity,
                                                  released=self._released)
                except NotOwnerError:
                    pass  # lost the partition between the check and the call
            else:
                owner = await self._owner(partition, refresh=refresh)
                if owner is not None and not (self._local is not None and owner.address == self._local.address):
                    body = {"namespace": namespace, "task_queue": task_queue, "kind": kind,
                            "max_tasks": max_tasks, "wait_seconds": max(0.0, remaining), "identity": identity}
                    try:
                        data = await self._call(owner, "/internal/poll", body, remaining + 10.0)
                        return [MatchedTask.from_json(t) for t in data.get("tasks", [])]
                    except (NotOwnerError, MatchingUnavailableError) as exc:
                        log.debug("poll of partition %d: %s", partition, exc)
            refresh = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await asyncio.sleep(min(_RETRY_PAUSE, remaining))
        return []

    async def query(
        self, namespace: str, task_queue: str, workflow_id: str, run_id: str, query_type: str,
        args_json: str | None, timeout: float, *, workflow_type: str = "",
    ) -> str | None:
        partition = self.partition_of(namespace, task_queue)
        if self._local is not None and self._local.owns(partition):
            return await self._local.query(namespace, task_queue, workflow_id, run_id, query_type,
                                           args_json, timeout, workflow_type=workflow_type)
        body = {"namespace": namespace, "task_queue": task_queue, "workflow_id": workflow_id,
                "run_id": run_id, "query_type": query_type, "args_json": args_json, "timeout": timeout,
                "workflow_type": workflow_type}
        owner = await self._owner(partition)
        for attempt in range(2):
            if owner is None:
                break
            try:
                data = await self._call(owner, "/internal/query", body, timeout + 10.0)
                result = data.get("result")
                return None if result is None else str(result)
            except (NotOwnerError, MatchingUnavailableError):
                if attempt:
                    raise
                owner = await self._owner(partition, refresh=True)
        raise MatchingUnavailableError(f"no matching instance owns task-queue partition {partition} yet")

    async def describe_queue(self, namespace: str, task_queue: str, timeout: float = 5.0) -> list[QueueStats] | None:
        """The owner's stats of one task queue (its pollers and waiting tasks per kind);
        None when no matching instance owns its partition or none answers."""
        partition = self.partition_of(namespace, task_queue)
        unanswered: str | None = None  # an owner that did not answer: not asked twice
        for attempt in range(2):
            if self._local is not None and self._local.owns(partition):
                with contextlib.suppress(NotOwnerError):
                    return self._local.describe_queue(namespace, task_queue)
            owner = await self._owner(partition, refresh=attempt > 0)
            if owner is None or (self._local is not None and owner.address == self._local.address):
                continue
            if owner.address == unanswered:
                # Still the owner that did not answer (frozen, or gone with its row left):
                # asking again would double the caller's wait for the same silence.
                break
            try:
                data = await self._call(owner, "/internal/describe",
                                        {"namespace": namespace, "task_queue": task_queue}, timeout)
            except NotOwnerError as exc:
                log.debug("describe of partition %d: %s", partition, exc)
                continue
            except MatchingUnavailableError as exc:
                log.debug("describe of partition %d: %s", partition, exc)
                unanswered = owner.address
                continue
            return [QueueStats.from_json(q) for q in data.get("queues", [])]
        return None

    async def respond_query(
        self, query_id: str, result_json: str | None = None, failure: dict[str, Any] | None = None,
        *, scope: QueryScope | None = None,
    ) -> None:
        """``scope``: who answers (query_scope.py); the owner refuses an answer from outside it."""
        head, sep, _ = query_id.partition(":")
        if not sep or not head.isdigit():
            raise UnknownQueryError(query_id)
        partition = int(head)
        if self._local is not None and self._local.owns(partition):
            self._local.respond_query(query_id, result_json, failure, scope=scope)
            return
        owner = await self._owner(partition)
        if owner is None:
            raise UnknownQueryError(query_id)
        body = {"query_id": query_id, "result": result_json, "failure": failure,
                **(scope.to_json() if scope is not None else {})}
        await self._call(owner, "/internal/respond-query", body, 10.0)

    async def notify_tasks(self, partition: int, notices: Sequence[TaskNotice], timeout: float = 1.0) -> None:
        """Tell the owner of ``partition`` which tasks were just published to it (notices.py).
        A hint: raises MatchingError when no owner is known or it does not answer, and the
        caller drops it. Never called for this process's own matching (tasks are handed over)."""
        owner = await self._owner(partition)
        if owner is None:
            raise MatchingUnavailableError(f"no matching instance owns task-queue partition {partition}")
        await self._call(owner, "/internal/notice", notices_to_json(partition, notices), timeout)
