"""Mutable state of one workflow run, and ``apply``: the one fold that changes it.

Everything here is pure in-memory code. The live shard loop, a rebuild from
``history_events`` and an audit replay of ``kadence.history`` all change state only
through :func:`apply`, so the three agree bit for bit (compare :meth:`MutableState.dumps`),
but for two exceptions kept here too: the attempt bookkeeping of pending activities
(:data:`ATTEMPT_FIELDS`, changed by :func:`start_attempt` and :func:`retry_attempt`),
which retried attempts keep out of history as Temporal does, and the later attempts of a
failing workflow task (:data:`TRANSIENT_FIELDS` and a transient ``wt``, changed by
:func:`schedule_transient`, :func:`start_transient` and :func:`fail_transient`);
:func:`events_only` is what the three agree on.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from kadence_protocol import avro
from kadence_protocol.enums import CLOSE_STATUS, ActivityState, ChildState, EventType, RunStatus, UpdateStage
from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

from .errors import HistoryCorrupted
from .snapshot import SNAPSHOT_VERSION, upgrade
from .unseen import counts_as_attempt

Event = dict[str, Any]
Failure = dict[str, Any]  # a kadence.Failure record, as decoded

# The failure a workflow task's timeout counts as (describe shows it as the last failure).
TASK_TIMED_OUT: Failure = {"message": "workflow task timed out", "type": "TimeoutError", "stack_trace": "",
                           "non_retryable": False, "details": None}

# Signal request ids remembered per run for deduplication.
MAX_REMEMBERED_REQUESTS = 200
# Completed updates remembered per run, to answer a repeated update id with its outcome.
MAX_REMEMBERED_UPDATES = 200


# ---- what a run keeps about each of its pending things ----------------------------------
#
# Each info is a slotted dataclass whose field names are the keys of its object in the
# snapshot JSON (orjson writes dataclasses as objects): snapshot.py names the layout's
# version and upgrades older layouts.


@dataclass(slots=True)
class WorkflowTaskInfo:
    """The outstanding workflow task."""

    scheduled_event_id: int
    attempt: int
    scheduled_time: int
    started_event_id: int = 0  # 0 until started
    started_time: int = 0  # when history recorded the start
    handed_time: int = 0  # when the worker was handed it: the worker's workflow.now()
    ran_ahead_id: int = 0  # not 0: it ran ahead (see WorkflowTaskStartedEventAttributes)
    # A later attempt of a failing task, kept out of history (transient.py): its
    # scheduled (and started) event ids are reserved, written only if it completes.
    transient: bool = False
    identity: str = ""  # the worker that started it


@dataclass(slots=True)
class ActivityInfo:
    """A pending activity. The fields of :data:`ATTEMPT_FIELDS` are its current attempt's."""

    activity_id: str
    activity_type: str
    task_queue: str
    input: str | None
    schedule_to_close_timeout_ms: int
    schedule_to_start_timeout_ms: int
    start_to_close_timeout_ms: int
    heartbeat_timeout_ms: int
    retry_policy: dict[str, Any] | None
    first_scheduled_time: int
    scheduled_time: int
    attempt: int = 1
    state: ActivityState = ActivityState.SCHEDULED
    started_time: int = 0
    started_event_id: int = 0
    last_failure: Failure | None = None
    heartbeat_details: str | None = None
    last_worker_identity: str = ""
    cancel_requested_event_id: int = 0  # 0: workflow code has not asked it to cancel


@dataclass(slots=True)
class TimerInfo:
    """A pending user timer (a workflow's StartTimer)."""

    timer_id: str
    started_event_id: int
    fire_at: int


@dataclass(slots=True)
class ParentInfo:
    """The parent of a child workflow's run: the run and the event that started the child."""

    namespace: str
    workflow_id: str
    run_id: str
    initiated_event_id: int


@dataclass(slots=True)
class ChildInfo:
    """An open child workflow of this run, by its StartChildWorkflowExecutionInitiated."""

    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    run_id: str
    parent_close_policy: str
    initiated_time: int
    state: ChildState = ChildState.INITIATED
    started_event_id: int = 0


@dataclass(slots=True)
class SignalOutInfo:
    """A signal this run sent to another workflow, awaiting delivery."""

    namespace: str
    workflow_id: str
    run_id: str
    signal_name: str


@dataclass(slots=True)
class UpdateInfo:
    """An update workflow code accepted (from history)."""

    name: str
    accepted_event_id: int
    completed: bool = False
    result: str | None = None
    failure: Failure | None = None


@dataclass(slots=True)
class UpdateWaiter:
    """A caller waiting for an update to reach ``wait`` (accepted or completed)."""

    reply_to: str
    request_id: str
    wait: str


@dataclass(slots=True)
class UpdateRequest:
    """An update request and its waiting callers: live bookkeeping, never in history."""

    name: str
    input: str | None
    identity: str
    stage: UpdateStage
    failure: Failure | None = None
    unanswered: int = 0  # completed workflow tasks that left it unanswered
    waiters: list[UpdateWaiter] = field(default_factory=list)
    seq: int = 0  # delivery order of the requests (0: known from history only)


@dataclass(slots=True)
class MutableState:
    namespace: str = ""
    workflow_id: str = ""
    run_id: str = ""
    workflow_type: str = ""
    task_queue: str = ""
    input: str | None = None
    status: RunStatus | None = None  # None until WorkflowExecutionStarted
    start_time: int = 0
    close_time: int | None = None
    execution_timeout_ms: int = 0
    # When the whole chain of runs (continue-as-new) times out (0: never), and the
    # timeout of each run alone (0: none).
    execution_expiration_time: int = 0
    run_timeout_ms: int = 0
    workflow_task_timeout_ms: int = 10000
    start_request_id: str = ""
    next_event_id: int = 1
    result: str | None = None
    failure: Failure | None = None
    new_run_id: str | None = None
    wt: WorkflowTaskInfo | None = None  # the outstanding workflow task
    last_completed_wt_scheduled_id: int = 0
    # That task's started_time (the worker's workflow.now() in it), and its ran_ahead_id
    # (not 0: it ran ahead, see WorkflowTaskStartedEventAttributes).
    last_completed_wt_started_time: int = 0
    last_completed_wt_ahead_id: int = 0
    # The first event the next workflow task brings: the one after the last completed task
    # a worker was handed. A task run ahead was never handed out, so its worker still
    # knows only what the task before it brought.
    carry_from: int = 1
    # Failed attempts of the current workflow task streak that history recorded, the last
    # one's failure, and (transient.py) the failed attempts after it that it did not
    # record, with the newest one's failure: live bookkeeping, see TRANSIENT_FIELDS.
    wt_failures: int = 0
    wt_last_failure: Failure | None = None
    wt_transient_failures: int = 0
    wt_transient_failure: Failure | None = None
    # An input (start, signal, activity result, timer firing) arrived since the
    # outstanding workflow task was scheduled, so another one is owed.
    inputs_pending: bool = False
    # Pending activities by scheduled event id (as text: the snapshot's JSON keys).
    activities: dict[str, ActivityInfo] = field(default_factory=dict)
    # Pending user timers by timer id.
    timers: dict[str, TimerInfo] = field(default_factory=dict)
    signal_request_ids: list[str] = field(default_factory=list)
    # Cancellation (cancellation.py): requested once, by this request id; the details the
    # workflow closed with when it closed as Canceled.
    cancel_requested: bool = False
    cancel_request_id: str = ""
    cancel_details: str | None = None
    # The reason a run was terminated with (None until then; a run a reset terminated has
    # the reset's), as a result wait and describe answer it.
    terminate_reason: str | None = None
    # Child workflows (children.py): this run's parent (a child's start names it), its open
    # children by initiated event id, and its signals to them awaiting delivery.
    parent: ParentInfo | None = None
    children: dict[str, ChildInfo] = field(default_factory=dict)
    signals_out: dict[str, SignalOutInfo] = field(default_factory=dict)
    # Updates (updates.py). What workflow code decided, from history (the newest
    # completed ones kept).
    updates: dict[str, UpdateInfo] = field(default_factory=dict)
    # The requests and their waiting callers: live bookkeeping kept in the snapshot only,
    # never in history (see events_only).
    update_requests: dict[str, UpdateRequest] = field(default_factory=dict)
    # Update ids the earlier runs of the chain accepted, by the run that accepted each: a
    # continue-as-new carries them so that a re-ask reaching this run is sent to that run
    # instead of running the update again (updates.py). Live bookkeeping, like the requests.
    earlier_updates: dict[str, str] = field(default_factory=dict)
    # Hash of the last event: the next event's hash chains to it (see chain.py).
    last_hash: str = ""
    # The memo given at start (JSON text of an object, or None), and the encoded size of the
    # run's events as written, in bytes (limits.py).
    memo: str | None = None
    history_size_bytes: int = 0
    # The run's search attributes (JSON text of an object, or None): the start's, with the
    # upserts of workflow code (SEARCH_ATTRIBUTES_MARKER) merged in; a retry carries them on.
    search_attributes: str | None = None
    # The run this one was reset from (reset.py): named by the WorkflowTaskFailed that ends
    # the copied history. A run a reset terminated names the new run in new_run_id.
    reset_from_run_id: str | None = None
    # The workflow retry policy (retry.py): this run's attempt, the policy its retries
    # follow, and a retry's backoff before its first workflow task (pending until scheduled).
    attempt: int = 1
    retry_policy: dict[str, Any] | None = None
    first_wt_backoff_ms: int = 0
    backoff_pending: bool = False
    # The run's W3C trace context (``traceparent``, ``tracestate``), taken from the command
    # that started it: what history did not hear from the run's own trace (a timer firing, a
    # task dispatched again, a signal from outside) continues it (run_trace.py). Live
    # bookkeeping, like the update requests: not in history (see events_only).
    trace_context: dict[str, str] = field(default_factory=dict)
    # The snapshot layout this state is written in (snapshot.py).
    version: int = SNAPSHOT_VERSION

    @property
    def running(self) -> bool:
        return self.status == RunStatus.RUNNING

    @property
    def wt_streak(self) -> int:
        """Failed attempts of the current workflow task streak, recorded or transient."""
        return self.wt_failures + self.wt_transient_failures

    def timeout_at(self) -> int:
        """When this run times out: the chain's expiration or the run's own timeout,
        whichever comes first (0: never)."""
        # A retry's run timeout counts from the end of its backoff (its first workflow task).
        run_deadline = (self.start_time + self.first_wt_backoff_ms + self.run_timeout_ms
                        if self.run_timeout_ms > 0 else 0)
        deadlines = [t for t in (self.execution_expiration_time, run_deadline) if t > 0]
        return min(deadlines, default=0)

    def dumps(self) -> bytes:
        """Canonical JSON, the snapshot: equal states give equal bytes."""
        # orjson writes dataclasses as objects and StrEnums as their strings, as
        # json.dumps(sort_keys=True, separators=(",", ":")) would, in a tenth of the time;
        # a snapshot is written for every run of every batch.
        return orjson.dumps(self, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def loads(cls, data: bytes | str) -> MutableState:
        return cls.from_snapshot(upgrade(orjson.loads(data)))

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> MutableState:
        """The state of a decoded snapshot of the current layout (see snapshot.upgrade)."""
        wt, parent = d.get("wt"), d.get("parent")
        return cls(
            **{k: v for k, v in d.items() if k not in _NESTED},
            status=_status(d.get("status")),
            wt=None if wt is None else WorkflowTaskInfo(**wt),
            parent=None if parent is None else ParentInfo(**parent),
            activities={k: _activity_info(v) for k, v in (d.get("activities") or {}).items()},
            timers={k: TimerInfo(**v) for k, v in (d.get("timers") or {}).items()},
            children={k: _child_info(v) for k, v in (d.get("children") or {}).items()},
            signals_out={k: SignalOutInfo(**v) for k, v in (d.get("signals_out") or {}).items()},
            updates={k: UpdateInfo(**v) for k, v in (d.get("updates") or {}).items()},
            update_requests={k: _update_request(v) for k, v in (d.get("update_requests") or {}).items()},
        )

    @staticmethod
    def predates(snapshot: Mapping[str, Any]) -> bool:
        """Whether a decoded snapshot lacks fields of this class: an earlier build wrote it, and
        only a rebuild from the run's history gives those fields what the fold would."""
        return not _FIELDS <= snapshot.keys()

    def clone(self) -> MutableState:
        return copy.deepcopy(self)

    def has_undispatched(self) -> bool:
        """A task is scheduled that no worker has started yet."""
        if self.wt is not None and not self.wt.started_event_id:
            return True
        return any(a.state == ActivityState.SCHEDULED for a in self.activities.values())

    def outcome_fields(self) -> dict[str, Any]:
        """What a result wait's answer takes from a closed run (services/common/outcome.py)."""
        return {"result": self.result, "failure": self.failure, "new_run_id": self.new_run_id,
                "cancel_details": self.cancel_details, "terminate_reason": self.terminate_reason}

    def timer_started_by(self, started_event_id: int) -> TimerInfo | None:
        """The pending user timer the TimerStarted event ``started_event_id`` started."""
        return next((tm for tm in self.timers.values() if tm.started_event_id == started_event_id), None)


_FIELDS = frozenset(f.name for f in dataclasses.fields(MutableState))
_NESTED = frozenset({"status", "wt", "parent", "activities", "timers", "children", "signals_out", "updates",
                     "update_requests"})


def _status(value: str | None) -> RunStatus | None:
    # Layout 0 wrote "" for a run not started (no snapshot is written before the start).
    return RunStatus(value) if value else None


def _activity_info(d: Mapping[str, Any]) -> ActivityInfo:
    a = ActivityInfo(**d)
    a.state = ActivityState(a.state)
    return a


def _child_info(d: Mapping[str, Any]) -> ChildInfo:
    c = ChildInfo(**d)
    c.state = ChildState(c.state)
    return c


def _update_request(d: Mapping[str, Any]) -> UpdateRequest:
    r = UpdateRequest(**{**d, "waiters": [UpdateWaiter(**w) for w in d["waiters"]]})
    r.stage = UpdateStage(r.stage)
    return r


def _started(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.workflow_type = a["workflow_type"]
    s.task_queue = a["task_queue"]
    s.input = a["input"]
    s.status = RunStatus.RUNNING
    s.start_time = e["event_time"]
    s.execution_timeout_ms = a["execution_timeout_ms"]
    # Events from before HistoryEvent version 6 name no expiration: their run timed out
    # execution_timeout_ms after its own start.
    s.execution_expiration_time = a.get("execution_expiration_time") or (
        e["event_time"] + s.execution_timeout_ms if s.execution_timeout_ms > 0 else 0)
    s.run_timeout_ms = a.get("run_timeout_ms") or 0
    s.workflow_task_timeout_ms = a["workflow_task_timeout_ms"] or 10000
    s.start_request_id = a["request_id"]
    s.memo = a.get("memo")
    s.search_attributes = _merged(None, a.get("search_attributes"))
    s.inputs_pending = True
    s.attempt = a.get("attempt") or 1
    s.retry_policy = a.get("retry_policy")
    s.first_wt_backoff_ms = a.get("first_workflow_task_backoff_ms") or 0
    s.backoff_pending = s.first_wt_backoff_ms > 0
    if a.get("parent_workflow_id") is not None:
        s.parent = ParentInfo(namespace=a["parent_namespace"], workflow_id=a["parent_workflow_id"],
                              run_id=a["parent_run_id"], initiated_event_id=a["parent_initiated_event_id"])


def _closed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    status = CLOSE_STATUS[e["event_type"]]
    s.status = status
    s.close_time = e["event_time"]
    s.wt = None
    s.inputs_pending = False
    # A closed run has no workflow task: a failing streak ends with it.
    s.wt_transient_failures, s.wt_transient_failure = 0, None
    if status == RunStatus.COMPLETED:
        s.result = a["result"]
    elif status == RunStatus.FAILED:
        s.failure = a["failure"]
        s.new_run_id = a.get("new_run_id")  # retried (retry.py): result waits follow the new run
    elif status == RunStatus.TIMED_OUT:
        s.new_run_id = a.get("new_run_id")
    elif status == RunStatus.CONTINUED_AS_NEW:
        s.new_run_id = a["new_run_id"]
    elif status == RunStatus.CANCELED:
        s.cancel_details = a["details"]
    elif status == RunStatus.TERMINATED:
        s.terminate_reason = a["reason"]
        if a.get("new_run_id"):
            s.new_run_id = a["new_run_id"]  # terminated by a reset: result waits follow the new run


def _signaled(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.inputs_pending = True
    if a["request_id"]:
        s.signal_request_ids.append(a["request_id"])
        del s.signal_request_ids[:-MAX_REMEMBERED_REQUESTS]


def _wt_scheduled(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.wt = WorkflowTaskInfo(scheduled_event_id=e["event_id"], attempt=a["attempt"], scheduled_time=e["event_time"])
    s.inputs_pending = False
    s.backoff_pending = False
    # The attempt says how many failed before it, those history did not record included
    # (a transient task written when it completes, transient.py).
    s.wt_failures = max(0, a["attempt"] - 1)
    s.wt_transient_failures, s.wt_transient_failure = 0, None


def _wt_started(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    wt = _current_wt(s, a)
    wt.started_event_id = e["event_id"]
    wt.started_time = e["event_time"]
    wt.handed_time = a.get("started_time", 0)  # what the worker's workflow.now() says
    wt.ran_ahead_id = a.get("ran_ahead_id", 0)
    wt.identity = a["identity"]


def _wt_completed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    wt = _current_wt(s, a)
    if not wt.ran_ahead_id:
        s.carry_from = a["scheduled_event_id"] + 1
    s.last_completed_wt_scheduled_id = a["scheduled_event_id"]
    s.last_completed_wt_started_time = wt.handed_time
    s.last_completed_wt_ahead_id = wt.ran_ahead_id
    s.wt = None
    s.wt_failures = 0
    s.wt_last_failure = None


def _wt_failed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    _current_wt(s, a)
    s.wt = None
    if a.get("base_run_id"):
        # The end of a reset's copied history (reset.py): the next task is a first attempt.
        s.reset_from_run_id = a["base_run_id"]
        s.wt_failures = 0
        s.wt_last_failure = None
        return
    # A task history refused (unseen.py) was no failure of the worker's: the next is attempt 1 again.
    if e["event_type"] == EventType.WORKFLOW_TASK_TIMED_OUT:
        s.wt_failures += 1
        s.wt_last_failure = TASK_TIMED_OUT
    elif counts_as_attempt(a["cause"]):
        s.wt_failures += 1
        s.wt_last_failure = a["failure"]


def _current_wt(s: MutableState, a: dict[str, Any]) -> WorkflowTaskInfo:
    if s.wt is None or s.wt.scheduled_event_id != a["scheduled_event_id"]:
        raise HistoryCorrupted(f"run {s.run_id}: no workflow task {a['scheduled_event_id']} is outstanding")
    return s.wt


def _activity_scheduled(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.activities[str(e["event_id"])] = ActivityInfo(
        activity_id=a["activity_id"],
        activity_type=a["activity_type"],
        task_queue=a["task_queue"],
        input=a["input"],
        schedule_to_close_timeout_ms=a["schedule_to_close_timeout_ms"],
        schedule_to_start_timeout_ms=a["schedule_to_start_timeout_ms"],
        start_to_close_timeout_ms=a["start_to_close_timeout_ms"],
        heartbeat_timeout_ms=a["heartbeat_timeout_ms"],
        retry_policy=a["retry_policy"],
        first_scheduled_time=e["event_time"],
        scheduled_time=e["event_time"],
    )


def _activity(s: MutableState, a: dict[str, Any]) -> ActivityInfo:
    act = s.activities.get(str(a["scheduled_event_id"]))
    if act is None:
        raise HistoryCorrupted(f"run {s.run_id}: no activity {a['scheduled_event_id']} is pending")
    return act


def _activity_started(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    act = _activity(s, a)
    act.state = ActivityState.STARTED
    act.attempt = a["attempt"]
    # The hand-out time when the event names it (its timeouts count from there), never
    # later than the event itself.
    act.started_time = min(a.get("started_time") or e["event_time"], e["event_time"])
    act.started_event_id = e["event_id"]
    if a.get("last_failure") is not None:
        act.last_failure = a["last_failure"]


def _activity_completed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    _activity(s, a)
    del s.activities[str(a["scheduled_event_id"])]
    s.inputs_pending = True


def _activity_failed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    act = _activity(s, a)
    backoff = a["retry_backoff_ms"]
    if backoff is None:
        del s.activities[str(a["scheduled_event_id"])]
        s.inputs_pending = True
        return
    # Histories written before retries stopped writing events (see retry_attempt): another
    # attempt follows after the backoff; workflow code does not see this one.
    act.attempt += 1
    act.state = ActivityState.SCHEDULED
    act.scheduled_time = e["event_time"] + backoff
    act.started_time = 0
    act.started_event_id = 0
    if e["event_type"] == EventType.ACTIVITY_TASK_FAILED:
        act.last_failure = a["failure"]
    else:
        act.last_failure = {"message": f"activity timed out ({a['timeout_type']})", "type": "TimeoutError",
                            "stack_trace": "", "non_retryable": False, "details": None}
        act.heartbeat_details = a["last_heartbeat_details"]


# ---- an activity's attempts: the one change of state without an event -----------------
#
# As Temporal does, the attempts of an activity before the one that ends it leave no
# history: they would grow it without bound (a retry every minute for a week). Their
# bookkeeping lives in the pending activity, in these fields only, and reaches
# PostgreSQL in the run's snapshot; the attempt that ends the activity writes
# ActivityTaskStarted (its attempt number and the failure before it) and its closing
# event. A fold of the events therefore agrees with the live state on everything but
# these fields of pending activities (see events_only), which only the two functions
# below change, and never for an activity that history has closed.
ATTEMPT_FIELDS = frozenset({"attempt", "state", "scheduled_time", "started_time", "started_event_id",
                            "last_failure", "heartbeat_details", "last_worker_identity"})


def start_attempt(act: ActivityInfo, now: int, started_time: int, identity: str) -> None:
    """A worker was handed the activity's current attempt (at ``started_time``, when
    known and not later than ``now``): its start-to-close and heartbeat timeouts count
    from there. No event: the attempt's ActivityTaskStarted is written only if it ends
    the activity."""
    act.state = ActivityState.STARTED
    act.started_time = min(started_time or now, now)
    act.last_worker_identity = identity


def retry_attempt(act: ActivityInfo, scheduled_time: int, failure: Failure, heartbeat_details: str | None) -> None:
    """The current attempt failed or timed out and another follows at ``scheduled_time``;
    the next attempt is handed ``heartbeat_details``, the last ones any attempt reported."""
    act.attempt += 1
    act.state = ActivityState.SCHEDULED
    act.scheduled_time = scheduled_time
    act.started_time = 0
    act.started_event_id = 0  # not 0 only for an attempt whose start a build before wrote
    act.last_failure = failure
    if heartbeat_details is not None:
        act.heartbeat_details = heartbeat_details


# ---- a workflow task's later attempts: transient, as in Temporal -----------------------
#
# The first failed attempt of a workflow task is recorded (WorkflowTaskScheduled, Started,
# Failed or TimedOut); the attempts after it are not while they fail (transient.py): the
# outstanding one is ``wt`` with ``transient`` set, at reserved event ids, and their count
# and newest failure are the fields below. Only the three functions below change them; the
# attempt that completes (or any event written while it is outstanding) writes its
# WorkflowTaskScheduled, whose attempt number gives the fold the count back.
TRANSIENT_FIELDS = frozenset({"wt_transient_failures", "wt_transient_failure"})


def schedule_transient(s: MutableState, now: int) -> WorkflowTaskInfo:
    """Schedule the next attempt of a failing workflow task without an event, at the id its
    WorkflowTaskScheduled would take (nothing else is written while it is outstanding)."""
    s.wt = WorkflowTaskInfo(scheduled_event_id=s.next_event_id, attempt=s.wt_streak + 1,
                            scheduled_time=now, transient=True)
    return s.wt


def start_transient(wt: WorkflowTaskInfo, now: int, handed_time: int, identity: str) -> None:
    """A worker was handed the transient task (its WorkflowTaskStarted would follow its
    WorkflowTaskScheduled)."""
    wt.started_event_id = wt.scheduled_event_id + 1
    wt.started_time = now
    wt.handed_time = handed_time
    wt.identity = identity


def fail_transient(s: MutableState, failure: Failure | None) -> None:
    """The transient task failed or timed out: one more unrecorded failed attempt."""
    s.wt = None
    s.wt_transient_failures += 1
    s.wt_transient_failure = failure


def events_only(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded snapshot without what only the live state knows (the attempt bookkeeping
    of pending activities, a failing workflow task's unrecorded attempts): what a fold of
    the run's events must equal."""
    activities = {sid: {k: v for k, v in act.items() if k not in ATTEMPT_FIELDS}
                  for sid, act in (snapshot.get("activities") or {}).items()}
    wt = snapshot.get("wt")
    return {**snapshot, "activities": activities, "update_requests": {}, "earlier_updates": {}, "trace_context": {},
            "wt": None if wt is not None and wt.get("transient") else wt,
            **{k: 0 if k == "wt_transient_failures" else None for k in TRANSIENT_FIELDS}}


def _timer_started(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.timers[a["timer_id"]] = TimerInfo(timer_id=a["timer_id"], started_event_id=e["event_id"],
                                        fire_at=_timer_start(e, a) + a["start_to_fire_timeout_ms"])


def _timer_start(e: Event, a: dict[str, Any]) -> int:
    # From the code's call as history clamped it (timer_start.py); null (older events, or
    # a command without a requested time): from the event's time.
    start = a.get("start_time")
    return e["event_time"] if start is None else int(start)


def _timer_fired(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    if s.timers.pop(a["timer_id"], None) is None:
        raise HistoryCorrupted(f"run {s.run_id}: timer {a['timer_id']!r} is not pending")
    if e["event_type"] == EventType.TIMER_FIRED:
        s.inputs_pending = True


def _cancel_requested(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.cancel_requested = True
    s.cancel_request_id = a["request_id"]
    s.inputs_pending = True


def _activity_cancel_requested(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    # The activity may have finished after the workflow task was handed out: nothing to mark.
    act = s.activities.get(str(a["scheduled_event_id"]))
    if act is not None:
        act.cancel_requested_event_id = e["event_id"]


def _activity_canceled(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    act = _activity(s, a)
    if not act.cancel_requested_event_id:
        raise HistoryCorrupted(f"run {s.run_id}: activity {a['scheduled_event_id']} canceled unasked")
    del s.activities[str(a["scheduled_event_id"])]
    s.inputs_pending = True


def _update_accepted(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.updates[a["update_id"]] = UpdateInfo(name=a["update_name"], accepted_event_id=e["event_id"])


def _update_completed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    u = s.updates.get(a["update_id"])
    if u is None or u.completed or u.accepted_event_id != a["accepted_event_id"]:
        raise HistoryCorrupted(f"run {s.run_id}: update {a['update_id']!r} is not accepted and running")
    u.completed, u.result, u.failure = True, a["result"], a["failure"]
    # Remembered to answer a repeat of the update id; the oldest completed ones are let go.
    # By event id, not dict order: a snapshot stores its keys sorted.
    done = sorted((x.accepted_event_id, uid) for uid, x in s.updates.items() if x.completed)
    for _, uid in done[:-MAX_REMEMBERED_UPDATES]:
        del s.updates[uid]


def _marker(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    if a["marker_name"] == SEARCH_ATTRIBUTES_MARKER:
        s.search_attributes = _merged(s.search_attributes, a["details"])


def _merged(current: str | None, upsert: str | None) -> str | None:
    """``current`` search attributes (JSON text of an object) with ``upsert``'s merged in,
    later values replacing earlier ones, as the visibility projection merges them; text
    that is no JSON object changes nothing (the frontend lets none through)."""
    try:
        values = orjson.loads(upsert) if upsert else None
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        return current
    merged = {**(orjson.loads(current) if current else {}), **values}
    return orjson.dumps(merged, option=orjson.OPT_SORT_KEYS).decode()


def _nothing(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    return None


def child_run_id(parent_run_id: str, initiated_event_id: int) -> str:
    """The run id a child's run gets: fixed by its parent's decision, so that a redelivered
    start is known as such and the parent can name the run (terminate, signal) before it
    hears of the start."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kadence:child:{parent_run_id}:{initiated_event_id}").hex


def _child_initiated(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.children[str(e["event_id"])] = ChildInfo(
        namespace=a["namespace"], workflow_id=a["workflow_id"], workflow_type=a["workflow_type"],
        task_queue=a["task_queue"], run_id=child_run_id(s.run_id, e["event_id"]),
        parent_close_policy=a["parent_close_policy"], initiated_time=e["event_time"])


def _child(s: MutableState, a: dict[str, Any]) -> ChildInfo:
    child = s.children.get(str(a["initiated_event_id"]))
    if child is None:
        raise HistoryCorrupted(f"run {s.run_id}: no child workflow {a['initiated_event_id']} is pending")
    return child


def _child_started(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    child = _child(s, a)
    child.state = ChildState.STARTED
    child.run_id = a["run_id"]
    child.started_event_id = e["event_id"]
    s.inputs_pending = True


def _child_closed(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    _child(s, a)
    del s.children[str(a["initiated_event_id"])]
    s.inputs_pending = True


def _signal_initiated(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    s.signals_out[str(e["event_id"])] = SignalOutInfo(namespace=a["namespace"], workflow_id=a["workflow_id"],
                                                      run_id=a["run_id"], signal_name=a["signal_name"])


def _signal_resolved(s: MutableState, e: Event, a: dict[str, Any]) -> None:
    if s.signals_out.pop(str(a["initiated_event_id"]), None) is None:
        raise HistoryCorrupted(f"run {s.run_id}: no signal {a['initiated_event_id']} is pending")
    s.inputs_pending = True


_APPLY: dict[str, Callable[[MutableState, Event, dict[str, Any]], None]] = {
    EventType.WORKFLOW_EXECUTION_STARTED: _started,
    **{close: _closed for close in CLOSE_STATUS},
    EventType.WORKFLOW_EXECUTION_SIGNALED: _signaled,
    EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED: _cancel_requested,
    EventType.WORKFLOW_TASK_SCHEDULED: _wt_scheduled,
    EventType.WORKFLOW_TASK_STARTED: _wt_started,
    EventType.WORKFLOW_TASK_COMPLETED: _wt_completed,
    EventType.WORKFLOW_TASK_FAILED: _wt_failed,
    EventType.WORKFLOW_TASK_TIMED_OUT: _wt_failed,
    EventType.ACTIVITY_TASK_SCHEDULED: _activity_scheduled,
    EventType.ACTIVITY_TASK_STARTED: _activity_started,
    EventType.ACTIVITY_TASK_COMPLETED: _activity_completed,
    EventType.ACTIVITY_TASK_FAILED: _activity_failed,
    EventType.ACTIVITY_TASK_TIMED_OUT: _activity_failed,
    EventType.ACTIVITY_TASK_CANCEL_REQUESTED: _activity_cancel_requested,
    EventType.ACTIVITY_TASK_CANCELED: _activity_canceled,
    EventType.TIMER_STARTED: _timer_started,
    EventType.TIMER_FIRED: _timer_fired,
    EventType.TIMER_CANCELED: _timer_fired,
    EventType.MARKER_RECORDED: _marker,
    EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED: _child_initiated,
    EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED: _child_closed,
    EventType.CHILD_WORKFLOW_EXECUTION_STARTED: _child_started,
    EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED: _child_closed,
    EventType.CHILD_WORKFLOW_EXECUTION_FAILED: _child_closed,
    EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT: _child_closed,
    EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED: _child_closed,
    EventType.CHILD_WORKFLOW_EXECUTION_CANCELED: _child_closed,
    EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: _signal_initiated,
    EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED: _signal_resolved,
    EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED: _signal_resolved,
    EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED: _update_accepted,
    EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED: _update_completed,
}


def apply(state: MutableState, event: Event, size: int | None = None) -> None:
    """Fold one history event into the run's mutable state.

    ``size`` is the length of the event's HistoryEvent encoding as written (the builder's,
    a history_events row, a kadence.history record's event): the run's history size adds
    it up. None re-encodes the event under the current schema, which is that length only
    for events written under the current schema.

    Raises HistoryCorrupted when the event does not follow the state (a gap in
    event ids, or an event about a task or timer that is not pending).
    """
    if event["event_id"] != state.next_event_id:
        raise HistoryCorrupted(
            f"run {state.run_id}: event {event['event_id']} follows {state.next_event_id - 1};"
            f" expected {state.next_event_id}"
        )
    try:
        fold = _APPLY[event["event_type"]]
    except KeyError:
        raise HistoryCorrupted(f"run {state.run_id}: unknown event type {event['event_type']!r}") from None
    fold(state, event, event["attributes"] or {})
    state.history_size_bytes += size if size is not None else len(avro.encode("HistoryEvent", event))
    state.next_event_id = event["event_id"] + 1
    state.last_hash = event.get("hash", "")


def rebuild(namespace: str, workflow_id: str, run_id: str, events: Iterable[Event],
            sizes: Iterable[int] | None = None) -> MutableState:
    """Mutable state from a run's full history: the fold, from nothing; ``sizes``: the
    lengths of the events' encodings as written, in the same order (see :func:`apply`)."""
    state = MutableState(namespace=namespace, workflow_id=workflow_id, run_id=run_id)
    if sizes is None:
        for event in events:
            apply(state, event)
    else:
        for event, size in zip(events, sizes, strict=True):
            apply(state, event, size)
    return state
