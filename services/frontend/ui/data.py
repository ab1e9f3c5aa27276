"""The web UI's one way to the data: the frontend's own handlers, called in process.

Every read and action goes through ``Handlers`` under the same ``Authenticator`` check the
HTTP API makes (same operation names, same permissions), so the UI can never do more than
the caller's credential allows. Features other branches add (visibility's list and count,
cancel, reset, namespaces) are detected from the route table by method and path: when a
route is absent the page says so instead of failing, and adapting to its answer is this
module's business only. Operations served by handlers other than the workflow ones (namespace
and schedule administration) are found among the app's routes by install_ui and called on
``admin_handlers``, which the frontend passes when it has them. Kadence's own extras (dead
letters, the start record, task-queue backlogs, a run's hash chain) are read here too.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from kadence_protocol import avro
from kadence_protocol.kafka_security import client_options
from kadence_protocol.kafka_stop import stop_consumer
from kadence_protocol.topics import REQUESTS
from services.common import chain, dlq
from services.common.audit import verifications as audit_store
from services.common.matching import LocalMatchingService
from services.common.matching.stats import PollerSeen
from services.common.namespaces import NamespaceRegistry
from services.common.read_bound import Reads

from ..admin import not_found
from ..auth import Authenticator, Permission, Principal
from ..errors import FrontendError, NotFound, PermissionDenied
from ..handlers import ROUTES, Handlers
from ..quotas import LIMITED, Kind, Quotas
from ..reads import event_json
from ..task_queues import TaskQueueDescription, TaskQueueReads, backlog_counts
from ..validation import name as valid_name
from ..validation import namespace as valid_namespace

log = logging.getLogger(__name__)

HISTORY_CAP = 5000  # events the run page reads at most (a timeline of more is unreadable anyway)
DLQ_CAP = 500  # dead letters the page lists at most
START_RECORD_WAIT_S = 2.0  # how long the run page waits for the start record's headers
NOT_IMPLEMENTED = 501  # what the visibility routes answer on a frontend without a visibility store


class Feature(enum.Enum):
    """Optional API operations, found in the route table by (method, path under the prefix)."""

    LIST = ("GET", "/workflows")
    COUNT = ("GET", "/workflows/count")
    CANCEL = ("POST", "/workflows/{workflow_id}/cancel")
    RESET = ("POST", "/workflows/{workflow_id}/reset")
    QUERY = ("POST", "/workflows/{workflow_id}/query")
    SIGNAL = ("POST", "/workflows/{workflow_id}/signal")
    TERMINATE = ("POST", "/workflows/{workflow_id}/terminate")
    SCHEDULES = ("GET", "/schedules")
    PAUSE_SCHEDULE = ("POST", "/schedules/{schedule_id}/pause")
    UNPAUSE_SCHEDULE = ("POST", "/schedules/{schedule_id}/unpause")
    TRIGGER_SCHEDULE = ("POST", "/schedules/{schedule_id}/trigger")


_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.IGNORECASE)


def _quoted(value: str) -> str:
    # The language reads a backslash as an escape ('Back\slash' is the type Backslash): doubled, it is one.
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class Search:
    """What the list page asks: the typed query plus the status and type filters."""

    query: str = ""
    status: str = ""
    workflow_type: str = ""

    def _where_order(self) -> tuple[str, str]:
        # The filters are ANDed to the typed condition; a typed ORDER BY stays last. (A string
        # holding the words ORDER BY would fool this split; the API then names the error.)
        found = list(_ORDER_BY.finditer(self.query))
        if not found:
            return self.query.strip(), ""
        at = found[-1].start()
        return self.query[:at].strip(), self.query[at:].strip()

    def _clauses(self, *, with_status: bool) -> list[str]:
        where, _ = self._where_order()
        clauses = [f"({where})"] if where else []
        if with_status and self.status:
            clauses.append(f"ExecutionStatus = {_quoted(self.status)}")
        if self.workflow_type:
            clauses.append(f"WorkflowType = {_quoted(self.workflow_type)}")
        return clauses

    def list_query(self) -> str:
        """The visibility query the list runs (what the page shows it runs)."""
        where, order = self._where_order()
        condition = " AND ".join(self._clauses(with_status=True)) if self.status or self.workflow_type else where
        return " ".join(filter(None, [condition, order]))

    def count_query(self) -> str:
        """Runs by status under the same condition except the status filter (the status chips)."""
        return " ".join(filter(None, [" AND ".join(self._clauses(with_status=False)), "GROUP BY ExecutionStatus"]))


def detect(routes: Sequence[tuple[str, str, str]] = ROUTES) -> dict[Feature, str]:
    """The handler name of each optional operation the route table holds."""
    by_route = {(method, path): name for method, path, name in routes}
    return {f: by_route[f.value] for f in Feature if f.value in by_route}


class UnauthenticatedUi(FrontendError):
    """The UI session has no credential while the API needs one (the page asks for it)."""

    status = 401
    error = "Unauthenticated"


@dataclass(frozen=True)
class WorkflowPage:
    executions: list[dict[str, Any]]
    next_page_token: str | None


@dataclass(frozen=True)
class StartRecord:
    """Where the command that started a run sits on kadence.requests, and its trace."""

    topic: str
    partition: int
    offset: int
    traceparent: str | None = None

    @property
    def trace_id(self) -> str | None:
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@dataclass(frozen=True)
class ChainCheck:
    """The hash chain of one run, checked on demand: None as first_break means it holds."""

    events: int
    first_break: int | None
    problem: str = ""

    @property
    def holds(self) -> bool:
        return self.first_break is None and not self.problem


@dataclass(frozen=True)
class TaskQueueRow:
    """One task queue and kind: polls waiting, tasks waiting (in memory, in PostgreSQL)."""

    task_queue: str
    kind: str
    pollers: int | None = None  # None: matching runs in another process (not published there)
    ready: int = 0
    backlog: int = 0
    oldest_ms: int | None = None  # the oldest task of the PostgreSQL backlog
    recent_pollers: tuple[PollerSeen, ...] = ()  # identities that polled lately, most recent first


@dataclass
class UiData:
    handlers: Handlers
    auth: Authenticator | None
    pool: Reads | None = None  # read-only: the frontend gives it a BoundedReads
    bootstrap: str = ""
    matching: LocalMatchingService | None = None  # the matching in this process, for its pollers
    features: dict[Feature, str] = field(default_factory=detect)
    namespaces_operation: str | None = None  # the operation listing namespaces, when the API has one
    # The object holding that operation, when not ``handlers`` (namespace administration may
    # live on handlers of its own).
    admin_handlers: object | None = None
    # Task-queue descriptions (the API's describe_task_queue reads them the same way).
    task_queue_reads: TaskQueueReads | None = None
    # The API's namespace registry (build_app sets it): a page of an unregistered namespace
    # is a 404 naming it, as the API's answer is, not an empty list.
    registry: NamespaceRegistry | None = None
    # The frontend's limits per namespace (the frontend sets them): the UI's calls count as the
    # API's routes do, so the UI is no way around them.
    quotas: Quotas | None = None

    # -- authorization -----------------------------------------------------------------------

    def principal(self, authorization: str | None) -> Principal | None:
        """The caller (None with authentication off); 401 without a credential."""
        if self.auth is None:
            return None
        if not authorization:
            raise UnauthenticatedUi("sign in with an API key or a JWT")
        return self.auth.authenticate(authorization)

    def _check(self, authorization: str | None, operation: str, namespace: str) -> None:
        principal = self.principal(authorization)
        if principal is not None and self.auth is not None:
            self.auth.authorize(principal, operation, namespace)

    def _check_admin(self, authorization: str | None, needs: str = "dead letters need") -> None:
        """Dead letters hold every namespace's commands, and the audit covers every
        namespace's runs: they need admin in all of them."""
        principal = self.principal(authorization)
        if principal is not None and not principal.allows(Permission.ADMIN, "*"):
            raise PermissionDenied(f"{principal.name} lacks the admin permission in every namespace (*)"
                                   f" that {needs}")

    def _admit(self, namespace: str, operation: str) -> None:
        """Count a call of ``operation`` against the namespace's limits, as its route would."""
        kind = LIMITED.get(operation)
        if kind is not None and kind is not Kind.POLLS and self.quotas is not None:
            self.quotas.admit(namespace, kind)

    async def check_namespace(self, namespace: str) -> None:
        """NamespaceNotFound (404) for a namespace that is not registered, as the API answers."""
        if self.registry is not None and namespace not in self.registry.known and not await \
                self.registry.is_registered(valid_namespace(namespace)):
            raise not_found(namespace)

    def _source(self, operation: str) -> Any:
        """The handlers object serving ``operation``: the workflow handlers or the admin ones."""
        for source in (self.handlers, self.admin_handlers):
            if source is not None and hasattr(source, operation):
                return source
        raise NotFound(f"this frontend has no {operation} operation")

    async def _call(self, authorization: str | None, operation: str, path: Mapping[str, str],
                    query: Mapping[str, str] | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self._check(authorization, operation, path["namespace"])
        await self.check_namespace(path["namespace"])
        self._admit(path["namespace"], operation)
        _, answer = await getattr(self._source(operation), operation)(path, query or {}, body or {})
        return dict(answer)

    def found_route(self, feature: Feature, operation: str) -> None:
        """A route of the app serves ``feature`` (seen by install_ui beyond the handlers' table);
        taken when some handlers object here has that operation."""
        if feature not in self.features and any(
                s is not None and hasattr(s, operation) for s in (self.handlers, self.admin_handlers)):
            self.features[feature] = operation

    # -- reads ----------------------------------------------------------------------------------

    def has(self, feature: Feature) -> bool:
        return feature in self.features

    async def namespaces(self, authorization: str | None) -> list[str]:
        """Known namespaces when the API lists them to this caller; empty otherwise (the page
        then takes a typed name)."""
        source = self.admin_handlers or self.handlers
        if self.namespaces_operation is None or not hasattr(source, self.namespaces_operation):
            return []
        principal = self.principal(authorization)
        if principal is not None and self.auth is not None:
            try:
                self.auth.authorize(principal, self.namespaces_operation, "*")
            except FrontendError:
                return []
        _, answer = await getattr(source, self.namespaces_operation)({}, {}, {})
        items = answer.get("namespaces", []) if isinstance(answer, dict) else []
        return sorted(str(n.get("name", n) if isinstance(n, dict) else n) for n in items)

    async def list_workflows(self, authorization: str | None, namespace: str, search: Search, page_size: int,
                             next_page_token: str | None) -> WorkflowPage | None:
        """A page of runs matching ``search``; None when visibility is not enabled."""
        operation = self.features.get(Feature.LIST)
        if operation is None:
            return None
        params = {"page_size": str(page_size)}
        if search.list_query():
            params["query"] = search.list_query()
        if next_page_token:
            params["next_page_token"] = next_page_token
        try:
            answer = await self._call(authorization, operation, {"namespace": namespace}, params)
        except FrontendError as exc:
            if exc.status == NOT_IMPLEMENTED:  # the route is there, its store is not
                return None
            raise
        executions = answer.get("executions") or answer.get("workflows") or []
        return WorkflowPage([dict(e) for e in executions if isinstance(e, Mapping)],
                            answer.get("next_page_token") or None)

    async def count_by_status(self, authorization: str | None, namespace: str,
                              search: Search) -> dict[str, int] | None:
        """Runs matching ``search`` (whatever its status filter) by status; None when
        visibility cannot count."""
        operation = self.features.get(Feature.COUNT)
        if operation is None:
            return None
        try:
            answer = await self._call(authorization, operation, {"namespace": namespace},
                                      {"query": search.count_query()})
        except FrontendError as exc:
            if exc.status == NOT_IMPLEMENTED:
                return None
            raise
        counts: dict[str, int] = {}
        for group in answer.get("groups") or []:
            if isinstance(group, Mapping):
                values = group.get("group_values") or group.get("values") or [group.get("value")]
                counts[str(values[0] if values else "?")] = int(group.get("count") or 0)
        if not counts and "count" in answer:
            counts["All"] = int(answer["count"])
        return counts

    async def describe(self, authorization: str | None, namespace: str, workflow_id: str,
                       run_id: str | None) -> dict[str, Any]:
        query = {"run_id": run_id} if run_id else {}
        return await self._call(authorization, "describe", {"namespace": namespace, "workflow_id": workflow_id},
                                query)

    async def history(self, authorization: str | None, namespace: str, workflow_id: str,
                      run_id: str) -> tuple[list[dict[str, Any]], bool]:
        """The run's events (at most HISTORY_CAP) and whether there were more."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while len(events) < HISTORY_CAP:
            query = {"run_id": run_id, "page_size": "1000"}
            if token:
                query["next_page_token"] = token
            answer = await self._call(authorization, "history",
                                      {"namespace": namespace, "workflow_id": workflow_id}, query)
            events.extend(answer.get("events") or [])
            token = answer.get("next_page_token")
            if not token:
                return events, False
        return events[:HISTORY_CAP], True

    async def start_record(self, namespace: str, workflow_id: str, run_id: str, *,
                           with_trace: bool) -> StartRecord | None:
        """The kadence.requests record that started the run, while it is the workflow's
        current run (history keeps that offset for its at-most-once check)."""
        if self.pool is None:
            return None
        row = await self.pool.fetchrow(
            "SELECT shard_id, kafka_offset FROM run_start_offsets"
            " WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3", namespace, workflow_id, run_id)
        if row is None:
            return None
        record = StartRecord(REQUESTS, int(row["shard_id"]), int(row["kafka_offset"]))
        if with_trace and self.bootstrap:
            traceparent = await self._traceparent(record)
            record = StartRecord(record.topic, record.partition, record.offset, traceparent)
        return record

    async def _traceparent(self, record: StartRecord) -> str | None:
        """The traceparent header of the record, if the broker still holds it (retention)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    **client_options())
        try:
            await consumer.start()
            tp = TopicPartition(record.topic, record.partition)
            consumer.assign([tp])
            consumer.seek(tp, record.offset)
            batches = await consumer.getmany(tp, timeout_ms=int(START_RECORD_WAIT_S * 1000), max_records=1)
            for message in batches.get(tp, []):
                if message.offset == record.offset:
                    for name, value in message.headers or ():
                        if name == "traceparent":
                            return bytes(value).decode("ascii", "replace")
        except (TimeoutError, KafkaError, OSError):
            log.info("could not read the start record %s[%d]@%d", record.topic, record.partition, record.offset,
                     exc_info=True)
        finally:
            await stop_consumer(consumer)
        return None

    @property
    def knows_pollers(self) -> bool:
        return self.matching is not None

    async def task_queues(self, authorization: str | None, namespace: str) -> list[TaskQueueRow]:
        """Pollers and waiting tasks by task queue and kind: the matching in this process
        (when there is one) and matching's task_backlog table (whoever owns the partition)."""
        self._check(authorization, "describe", namespace)
        self._admit(namespace, "describe_task_queue")  # a read of the backlog, as a describe is
        rows: dict[tuple[str, str], TaskQueueRow] = {}
        if self.matching is not None:
            for q in self.matching.queue_stats(namespace):
                rows[(q.task_queue, q.kind)] = TaskQueueRow(q.task_queue, q.kind, q.pollers, q.ready,
                                                            recent_pollers=q.recent_pollers)
        if self.pool is not None:
            for key, stored in (await backlog_counts(self.pool, namespace)).items():
                known = rows.get(key, TaskQueueRow(*key, pollers=0 if self.matching is not None else None))
                rows[key] = replace(known, backlog=stored.tasks, oldest_ms=stored.oldest_ms)
        return [rows[k] for k in sorted(rows)]

    async def task_queue(self, authorization: str | None, namespace: str, task_queue: str) -> TaskQueueDescription:
        """One task queue as ``GET .../task-queues/{task_queue}`` answers it (pollers from the
        matching that owns it, wherever it runs)."""
        self._check(authorization, "describe_task_queue", namespace)
        self._admit(namespace, "describe_task_queue")
        if self.task_queue_reads is None:
            raise NotFound("this frontend does not describe task queues")
        # The name checked as the API checks it: a NUL reached PostgreSQL (a 500 page).
        return await self.task_queue_reads.describe(namespace, valid_name({}, "task_queue", value=task_queue))

    async def audit_status(self, authorization: str | None,
                           history: int = 10) -> tuple[list[audit_store.Verification], list[Any]]:
        """The latest verifications (newest first) and the divergences of the latest: they
        cover every namespace, so they need admin in all of them, as dead letters do."""
        self._check_admin(authorization, "the audit needs")
        if self.pool is None:
            raise NotFound("this frontend has no database to read the audit status from")
        try:
            found = await audit_store.latest(self.pool, history)
        except asyncpg.UndefinedTableError:
            return [], []  # a database the audit-status migration has not reached yet
        return found, (await audit_store.divergences_of(self.pool, found[0].id) if found else [])

    async def run_verdict(self, authorization: str | None, namespace: str,
                          run_id: str) -> audit_store.RunVerdict | None:
        """What the latest stored verification said about one run (None: none stored)."""
        self._check(authorization, "history", namespace)
        if self.pool is None:
            return None
        try:
            return await audit_store.run_verdict(self.pool, run_id)
        except asyncpg.UndefinedTableError:
            return None

    async def verify_chain(self, authorization: str | None, namespace: str, workflow_id: str,
                           run_id: str) -> ChainCheck:
        """Check one run's hash chain as the audit does, from the events as written."""
        self._check(authorization, "history", namespace)
        if self.pool is None:
            raise NotFound("this frontend has no database to read the events from")
        rows = await self.pool.fetch("SELECT data FROM history_events WHERE run_id = $1 ORDER BY event_id", run_id)
        encodings = [bytes(r["data"]) for r in rows]
        try:
            events = [event_json(data) for data in encodings]
        except avro.DecodeError as exc:
            return ChainCheck(len(encodings), None, f"an event does not decode: {exc}")
        return ChainCheck(len(events), chain.first_break(events, encodings))

    async def schedules(self, authorization: str | None, namespace: str) -> list[dict[str, Any]] | None:
        """The namespace's schedules; None when this frontend has none."""
        operation = self.features.get(Feature.SCHEDULES)
        if operation is None:
            return None
        answer = await self._call(authorization, operation, {"namespace": namespace})
        return [dict(x) for x in answer.get("schedules") or [] if isinstance(x, Mapping)]

    async def schedule_action(self, authorization: str | None, feature: Feature, namespace: str,
                              schedule_id: str, body: dict[str, Any]) -> dict[str, Any]:
        operation = self.features.get(feature)
        if operation is None:
            raise NotFound(f"this frontend has no {feature.name.lower()} operation")
        return await self._call(authorization, operation, {"namespace": namespace, "schedule_id": schedule_id},
                                {}, body)

    # -- actions ----------------------------------------------------------------------------------

    async def act(self, authorization: str | None, feature: Feature, namespace: str, workflow_id: str,
                  body: dict[str, Any]) -> dict[str, Any]:
        """Query, signal, terminate, cancel or reset a run: the API's own handler and permission."""
        operation = self.features.get(feature)
        if operation is None:
            raise NotFound(f"this frontend has no {feature.name.lower()} operation")
        principal = self.principal(authorization)
        # The history then says who acted, and from where.
        body = {**body, "identity": f"web-ui:{principal.name}" if principal is not None else "web-ui"}
        return await self._call(authorization, operation, {"namespace": namespace, "workflow_id": workflow_id},
                                {}, body)

    async def dead_letters(self, authorization: str | None) -> list[dlq.DeadLetterEntry]:
        self._check_admin(authorization)
        return await dlq.list_dead_letters(self.bootstrap, limit=DLQ_CAP)

    async def redrive(self, authorization: str | None, offsets: Sequence[int]) -> list[dlq.DeadLetterEntry]:
        self._check_admin(authorization)
        return await dlq.redrive(self.bootstrap, offsets=set(offsets))
