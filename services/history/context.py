"""The batch context: what one shard batch has loaded, changed and must reply."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kadence_protocol import avro
from services.common import kafka

from . import refusals, run_trace, updates
from .builder import Mutation, OutboxMessage, Transition
from .ledger import request_key
from .state import Event, MutableState

if TYPE_CHECKING:
    from .engine import TimerFiring
    from .shard import Shard


class BatchContext:
    """Implements :class:`~.engine.Context` for one batch of one shard."""

    def __init__(self, shard: Shard, now: int, no_current: frozenset[tuple[str, str]] = frozenset(), *,
                 began: float) -> None:
        self.shard = shard
        self.now = now
        # When the batch began, on the event loop's clock: its records were written before,
        # so a read of the namespaces started since holds every one they may name.
        self.began = began
        # Workflows the shard looked up before the batch and found no run of.
        self.no_current = no_current
        self.transitions: dict[str, Transition] = {}
        self.replies: list[OutboxMessage] = []
        self.local_replies: list[dict[str, Any]] = []  # to the frontend in this process (its ReplySink)
        self.timer_rows_deleted: list[str] = []
        self.heartbeats: dict[tuple[str, int], tuple[str, int, int, str | None, int]] = {}
        self.headers: tuple[tuple[str, bytes], ...] = ()
        # The kadence.requests offset of the command running (a timer: of the last record
        # read), and what the batch adds to the shard's ledger (see ledger.py).
        self.offset = -1
        self.requests: dict[tuple[str, str, str], str] = {}
        self.run_starts: dict[tuple[str, str], tuple[str, int]] = {}
        # The user command running, if it has no reply_to: its refusal is dead-lettered (refusals.py).
        self.taken: refusals.Taken | None = None
        # The name of the command running ('' for a timer): where its request id goes (ledger.py).
        self.command_name = ""

    async def current_run(self, namespace: str, workflow_id: str) -> Transition | None:
        run_id = self.shard.current.get((namespace, workflow_id))
        if run_id is None:
            if (namespace, workflow_id) in self.no_current:
                return None
            run_id = await self.shard.store.current_run(namespace, workflow_id)
            if run_id is None:
                return None
        return await self.run(namespace, workflow_id, run_id)

    async def run(self, namespace: str, workflow_id: str, run_id: str) -> Transition | None:
        t = self.transitions.get(run_id)
        state = t.state if t is not None else await self.shard.load(run_id)
        # A run id of another workflow or namespace names no run, whether an earlier command
        # of the batch loaded that run or not.
        if state is None or state.namespace != namespace or state.workflow_id != workflow_id:
            return None
        if not self.headers and state.trace_context:
            # A timer firing: what it does (a new run of a retry too) continues the run's trace.
            self.headers = run_trace.headers_of(state.trace_context)
        # Per command: a signal from a client of another trace still writes in the run's.
        headers = run_trace.for_run(self.headers, state.trace_context)
        if t is None:
            t = Transition(state, self.now, self.shard.shard_id, headers=headers,
                           tail=self.shard.tails.get(run_id), takes_tasks=self.shard.tasks.takes,
                           history_limits=self.shard.history_limits,
                           timer_ahead_grace_ms=self.shard.config.timer_ahead_grace_ms)
            self.transitions[run_id] = t
        else:
            t.headers = headers
        return t

    def new_run(self, state: MutableState) -> Transition:
        state.trace_context = run_trace.context_of(self.headers)
        t = Transition(state, self.now, self.shard.shard_id, headers=self.headers, tail=[],
                       takes_tasks=self.shard.tasks.takes, history_limits=self.shard.history_limits,
                       timer_ahead_grace_ms=self.shard.config.timer_ahead_grace_ms)
        self.transitions[state.run_id] = t
        self.run_starts[(state.namespace, state.workflow_id)] = (state.run_id, self.offset)
        # Current at once, for the batch's later commands: remembered as not yet running, it
        # left the run it replaced current, and a second start of the id in the batch, seeing
        # that run closed, made another run beside this one.
        self.shard.remember(state, current=True)
        return t

    async def run_events(self, run_id: str) -> list[tuple[Event, int]]:
        """Every event of a run so far, committed and added in this batch, each with the
        length of its encoding as written (a reset copies them, reset.py)."""
        rows = await self.shard.store.event_rows(run_id)
        events = [(avro.decode(data)[1], len(data)) for data in rows]
        t = self.transitions.get(run_id)
        if t is not None:
            events.extend((e, len(data)) for e, data in zip(t.events, t.encoded, strict=True))
        return events

    def became_current(self, state: MutableState) -> None:
        """A run made within the batch is its workflow's current run from now on (a reset's
        new run), for the batch's later commands as after the commit."""
        self.shard.remember(state)

    def reply(self, command: dict[str, Any], *, ok: bool, run_id: str | None = None,
              error_type: str | None = None, error_message: str | None = None, created: bool = False,
              update_outcome: str | None = None) -> None:
        if ok and run_id and command.get("request_id"):
            # Applied (or answered as applied): a copy read later gets this answer (ledger.py).
            key = request_key(self.command_name, command["namespace"], command["workflow_id"],
                              command["request_id"])
            if key not in self.shard.ledger.applied:
                self.requests[key] = run_id
        reply_to = command.get("reply_to")
        if not reply_to:
            if not ok and self.taken is not None and self.taken.answers(command):
                # Refused with nobody to tell: a dead letter, after the commit (refusals.py).
                self.replies.append(self.taken.dead_letter(error_type, error_message, self.headers))
                self.taken = None  # one dead letter per command
            return
        reply = {
            "reply_to": reply_to, "request_id": command["request_id"], "ok": ok, "run_id": run_id,
            "error_type": error_type, "error_message": error_message,
            "namespace": command["namespace"], "workflow_id": command["workflow_id"], "created": created,
            "update_outcome": update_outcome,
        }
        if self.shard.replies.takes(reply_to):
            self.local_replies.append(reply)
        else:
            self.replies.append(OutboxMessage(kafka.REPLIES, reply_to.encode(), avro.encode("Reply", reply),
                                              self.headers))

    def send(self, topic: str, key: bytes, record_name: str, record: dict[str, Any]) -> None:
        self.replies.append(OutboxMessage(topic, key, avro.encode(record_name, record), self.headers))

    def delete_timer_row(self, key: str) -> None:
        self.timer_rows_deleted.append(key)

    def hold_timer(self, timer: TimerFiring, recheck_until_ms: int, guard_ms: int) -> bool:
        return self.shard.intake.hold(timer, recheck_until_ms, guard_ms)

    def last_heartbeat(self, run_id: str, scheduled_event_id: int) -> tuple[int, str | None] | None:
        pending = self.heartbeats.get((run_id, scheduled_event_id))
        if pending is not None:
            return pending[4], pending[3]
        return self.shard.heartbeats.get((run_id, scheduled_event_id))

    def record_heartbeat(self, run_id: str, scheduled_event_id: int, attempt: int, details: str | None) -> None:
        self.heartbeats[(run_id, scheduled_event_id)] = (run_id, scheduled_event_id, attempt, details, self.now)

    def close(self) -> list[Mutation]:
        for t in self.transitions.values():
            updates.after(self, t)  # a closed run answers the callers of its updates
        return [t.close() for t in self.transitions.values() if t.events or t.outbox or t.local_tasks
                or t.timers_upsert or t.timers_delete or t.changed_without_events]
