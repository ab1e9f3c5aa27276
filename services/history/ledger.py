"""Commands that target a workflow rather than a run: at most once, never to a later run.

A start, signal, signal-with-start, terminate or cancel without a run id is for "the workflow":
whichever run is current when history reads it. Two rules keep a copy of such a command
read again (a client retry with the same request id, the same record produced twice, an
operator rewind re-reading the log) from acting a second time or on the wrong run:

* **Request ids, per workflow.** Every such command answered ``ok`` records
  (namespace, workflow id, request id) -> run id, in memory and in the ``request_ids``
  table, in the batch's own transaction. A command whose request id is recorded is not
  applied again, to any run: it gets the recorded answer. Memory holds the newest ids;
  ids it lacks are checked by the commit statement itself (no round trip before the
  batch), which refuses the batch when one is recorded already (:class:`RequestSeen`);
  the shard then looks them up and runs the batch again. Rows are trimmed by age.
* **A run's start offset.** Each run records the kadence.requests offset of the command
  that created it (a timer-made run: the offset of the last record read before it). A
  command without run id read at offset ``o`` applies to the current run only if that
  run started at an offset below ``o``; otherwise it was accepted before the run existed,
  was handled when first read, and is refused now without effect. In a log read once in
  order this always holds; it matters when records are read again after an operator
  rewind (``replay_until``), when the start offset is looked up in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from services.common import outage

from .errors import HistoryError

if TYPE_CHECKING:
    from .context import BatchContext
    from .store import HistoryStore

log = logging.getLogger(__name__)

# Commands that may name no run: they act on the current run of their workflow. A new
# command of that kind (cancel, update) belongs here to get both rules.
WORKFLOW_COMMANDS = frozenset({"StartWorkflowExecution", "SignalWithStartWorkflowExecution",
                               "SignalWorkflowExecution", "TerminateWorkflowExecution",
                               "RequestCancelWorkflowExecution", "ResetWorkflowExecution",
                               "StartChildWorkflowExecution", "SignalExternalWorkflowExecution"})
# The commands whose request ids the ledger keeps as given: starts, whose retries must find
# the run they started across builds. Every other command's id is kept under its command's
# name, so a request id a start used does not swallow a signal, terminate, cancel or reset
# of the same workflow (each answered ok and applied to nothing), nor one of those another.
PLAIN_REQUEST_IDS = frozenset({"", "StartWorkflowExecution", "StartChildWorkflowExecution"})
REMEMBERED_REQUESTS = 10_000  # request ids kept in memory per shard (the table has them all)
REMEMBERED_STARTS = 10_000  # run start offsets kept in memory per shard
TRIM_EVERY_S = 60.0

RequestKey = tuple[str, str, str]  # namespace, workflow id, request id
WorkflowKey = tuple[str, str]  # namespace, workflow id


def request_key(name: str, namespace: str, workflow_id: str, request_id: str) -> RequestKey:
    """Where the ledger keeps command ``name``'s request id (see PLAIN_REQUEST_IDS)."""
    return namespace, workflow_id, request_id if name in PLAIN_REQUEST_IDS else f"{name}/{request_id}"


class RequestSeen(HistoryError):
    """The batch applied a request id that the request_ids table has already: nothing was
    written, and the batch runs again with those ids known."""


class Ledger:
    """One shard's memory of applied request ids and of its runs' start offsets."""

    def __init__(self, shard_id: int) -> None:
        self.shard_id = shard_id
        self.applied: OrderedDict[RequestKey, str] = OrderedDict()
        self.starts: OrderedDict[WorkflowKey, tuple[str, int]] = OrderedDict()
        # Records below this offset were read before an operator rewind (see the module doc).
        self.replay_until = 0

    def resume(self, replay_until: int) -> None:
        """The shard consumes again; records below ``replay_until`` were read before a rewind."""
        self.replay_until = replay_until

    # ---- before a command runs ---------------------------------------------------------

    async def admit(self, ctx: BatchContext, name: str, cmd: dict[str, Any], offset: int) -> bool:
        """Whether the command at ``offset`` is to run; if not, it has been answered."""
        if name not in WORKFLOW_COMMANDS:
            return True
        ns, wid = cmd["namespace"], cmd["workflow_id"]
        request_id = cmd.get("request_id") or ""
        if request_id:
            key = request_key(name, ns, wid, request_id)
            run_id = ctx.requests.get(key) or self.applied.get(key)
            if run_id is None and offset < self.replay_until:
                # A copy read again after a rewind: its first answer, if it had one, is recorded.
                await self.look_up(ctx.shard.store, [key])
                run_id = self.applied.get(key)
            if run_id is not None:
                ctx.reply(cmd, ok=True, run_id=run_id)
                return False
        if cmd.get("run_id"):
            return True
        current = await ctx.current_run(ns, wid)
        if current is None:
            return True
        started = await self.start_offset(ctx, ns, wid, current.state.run_id, offset)
        if started is None or started < offset:
            return True
        log.warning("shard %d: %s at offset %d for %s/%s was accepted before run %s started (offset %d):"
                    " not applied", self.shard_id, name, offset, ns, wid, current.state.run_id, started)
        if name == "StartWorkflowExecution":
            ctx.reply(cmd, ok=False, run_id=current.state.run_id, error_type="WorkflowAlreadyStarted",
                      error_message=f"workflow {wid!r} was started again (run {current.state.run_id})"
                                    " after this request was accepted")
        else:
            ctx.reply(cmd, ok=False, error_type="WorkflowNotFound",
                      error_message=f"the run of workflow {wid!r} this request was accepted for has closed")
        return False

    async def start_offset(self, ctx: BatchContext, ns: str, wid: str, run_id: str, offset: int) -> int | None:
        """The offset run ``run_id`` started at, if known; PostgreSQL is asked only for a
        record read again after an operator rewind."""
        pending = ctx.run_starts.get((ns, wid))
        known = pending if pending is not None else self.starts.get((ns, wid))
        if known is not None and known[0] == run_id:
            return known[1]
        if offset >= self.replay_until:
            return None  # read in order: the run began at an earlier record
        stored = await ctx.shard.store.run_start_offset(ns, wid)
        if stored is not None and stored[0] == run_id:
            self._remember_start((ns, wid), stored)
            return stored[1]
        return None

    # ---- after a commit ---------------------------------------------------------------

    def committed(self, ctx: BatchContext) -> None:
        for key, run_id in ctx.requests.items():
            self._remember(key, run_id)
        for wf, start in ctx.run_starts.items():
            self._remember_start(wf, start)

    async def look_up(self, store: HistoryStore, keys: Iterable[RequestKey]) -> None:
        """Learn which of ``keys`` the table has (after :class:`RequestSeen`)."""
        for key, run_id in (await store.applied_requests(list(keys))).items():
            self._remember(key, run_id)

    def _remember(self, key: RequestKey, run_id: str) -> None:
        self.applied[key] = run_id
        self.applied.move_to_end(key)
        while len(self.applied) > REMEMBERED_REQUESTS:
            self.applied.popitem(last=False)

    def _remember_start(self, wf: WorkflowKey, start: tuple[str, int]) -> None:
        self.starts[wf] = start
        self.starts.move_to_end(wf)
        while len(self.starts) > REMEMBERED_STARTS:
            self.starts.popitem(last=False)


async def trim_loop(store: HistoryStore, shard_id: int, retention_s: float) -> None:
    """Delete the shard's request ids older than ``retention_s``, once a minute."""
    while True:
        try:
            await store.trim_request_ids(shard_id, retention_s)
        except outage.DATABASE_ERRORS as exc:
            log.warning("shard %d: request id trim failed (%r); next time", shard_id, exc)
        await asyncio.sleep(TRIM_EVERY_S)
