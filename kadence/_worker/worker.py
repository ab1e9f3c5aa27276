"""The Worker: registers workflows and activities for one task queue and polls for tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from kadence._activity import ActivityDefinition
from kadence._client import Client
from kadence._http import path_segment
from kadence._tracing_interceptor import TracingInterceptor
from kadence._worker.activity_tasks import ActivityTaskProcessor
from kadence._worker.adaptive import AdaptiveLimits
from kadence._worker.answers import AnswerBatcher
from kadence._worker.interception import intercepted_process
from kadence._worker.poller import Poller, Reachability, Slots
from kadence._worker.workflow_tasks import WorkflowTaskProcessor
from kadence._workflow.definition import WorkflowDefinition
from kadence.converter import DataConverter
from kadence.interceptor import Interceptor

__all__ = ["ASYNC_ACTIVITIES_AT_ONCE", "THREADED_ACTIVITIES_AT_ONCE", "Worker"]

_log = logging.getLogger(__name__)

#: The default ceiling of activities at once when all of a worker's activities are coroutine
#: functions: one waiting costs the event loop nothing, as a workflow task's slot does not.
ASYNC_ACTIVITIES_AT_ONCE = 1_000
#: The default ceiling when any is a plain function, which runs on a thread of the worker's
#: pool (this many threads): a slot taken beyond them would wait for a thread.
THREADED_ACTIVITIES_AT_ONCE = 100


def _unique(kind: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"more than one {kind} registered under the name(s): {', '.join(duplicates)}")


class Worker:
    """Polls a task queue and runs the registered workflows and activities.

    Use ``async with Worker(...):`` to run it in the background, or ``await worker.run()``
    to run until cancelled or :meth:`shutdown` is called.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Iterable[type] = (),
        activities: Iterable[Callable[..., Any]] = (),
        max_concurrent_activities: int | None = None,
        max_concurrent_workflow_tasks: int = 1_000,
        max_cached_workflows: int = 10_000,
        identity: str | None = None,
        workflow_pollers: int = 2,
        activity_pollers: int = 2,
        max_tasks_per_poll: int = 100,
        poll_wait_seconds: float = 20.0,
        activity_executor: concurrent.futures.Executor | None = None,
        graceful_shutdown_timeout: float = 10.0,
        run_ahead: bool = True,
        data_converter: DataConverter | None = None,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        """``run_ahead``: when an activity completes here for a run this worker holds in its
        cache, run the workflow's next task at once and send its commands with the result
        (history records them if that task is the one it would have handed out; see
        docs/protocol.md). Saves a round trip per activity. Likewise when a user timer of a
        run held here comes due, by this machine's clock: the task it wakes runs here and is
        sent at once (history holds such timers for ``KADENCE_TIMER_AHEAD_GRACE_MS`` before
        it fires them itself). Off, every workflow task is polled. ``data_converter``
        (default: the client's) converts and encodes payloads.
        ``interceptors`` (kadence.interceptor) come after the client's and the SDK's tracing.

        ``max_concurrent_workflow_tasks`` (1,000), ``max_concurrent_activities`` and
        ``max_tasks_per_poll`` (100, the most the server hands out per poll) are ceilings: the
        limits a worker works with start at 50 tasks at once and 10 per poll, grow fourfold while
        polls come back full (a backlog) and fall back while they come back empty
        (kadence/_worker/adaptive.py), so an untuned worker runs as a tuned one under load. A
        workflow task holds its slot until the frontend has taken its answer, so a small limit caps
        throughput at slots / round trip (20 slots held about 40 ms each: 500 tasks/s).
        ``max_cached_workflows`` (10,000, as Temporal's Go SDK) holds open runs only (a finished
        run leaves at once): with more runs open than it holds, every task of an evicted run
        replays its whole history and an activity's result cannot carry the next task, which
        doubled the worker's and the server's CPU per workflow at 10,000 in flight.
        ``max_concurrent_activities`` defaults to :data:`ASYNC_ACTIVITIES_AT_ONCE` (1,000) when
        every activity registered is a coroutine function, and to
        :data:`THREADED_ACTIVITIES_AT_ONCE` (100, the default pool's threads) when any is a plain
        function: an activity holds its slot through its completion's round trip (and the
        workflow task run ahead on it), so 100 slots capped a backlog of async activities at 100
        per round trip, while a plain function's slot must not wait for a thread."""
        if not task_queue:
            raise ValueError("Worker needs a task_queue")
        workflow_defs = [WorkflowDefinition.of(w) for w in workflows]
        activity_defs = [ActivityDefinition.of(a) for a in activities]
        if not workflow_defs and not activity_defs:
            raise ValueError("Worker needs at least one workflow or activity")
        _unique("workflow", [d.name for d in workflow_defs])
        _unique("activity", [d.name for d in activity_defs])
        self.client = client
        converter = data_converter or client.data_converter
        # The SDK's spans first (outermost), then the client's interceptors, then the worker's.
        chain: list[Interceptor] = [TracingInterceptor()]
        for interceptor in (*client.interceptors, *interceptors):
            if interceptor not in chain and not isinstance(interceptor, TracingInterceptor):
                chain.append(interceptor)
        self.interceptors = chain
        self.task_queue = task_queue
        self.identity = identity or client.identity
        self._graceful_timeout = graceful_shutdown_timeout
        if max_concurrent_activities is None:
            threaded = any(not d.is_async for d in activity_defs)
            max_concurrent_activities = THREADED_ACTIVITIES_AT_ONCE if threaded else ASYNC_ACTIVITIES_AT_ONCE
        self._own_executor = activity_executor is None and any(not d.is_async for d in activity_defs)
        self._executor = activity_executor or (
            concurrent.futures.ThreadPoolExecutor(
                max_workers=max_concurrent_activities, thread_name_prefix="kadence-activity"
            )
            if self._own_executor
            else None
        )
        queue = path_segment(task_queue)
        self._reachability = Reachability(f"task queue {task_queue!r}")
        answers = AnswerBatcher(client.transport)
        self._pollers: list[Poller] = []
        self.workflow_processor: WorkflowTaskProcessor | None = None
        if workflow_defs:
            self.workflow_processor = WorkflowTaskProcessor(
                answers,
                namespace=client.namespace,
                workflows=workflow_defs,
                identity=self.identity,
                max_cached_workflows=max_cached_workflows,
                data_converter=converter,
                activities=activity_defs,
                activity_executor=self._executor,
                interceptors=chain,
                run_timers_ahead=run_ahead,
            )
            self._pollers += self._make_pollers(
                f"/task-queues/{queue}/workflow-tasks/poll",
                intercepted_process(chain, self.workflow_processor.process, activity=False,
                                    namespace=client.namespace, task_queue=task_queue),
                max_concurrent_workflow_tasks,
                workflow_pollers,
                max_tasks_per_poll,
                poll_wait_seconds,
                answers=answers,
            )
        if activity_defs:
            processor = ActivityTaskProcessor(
                answers,
                namespace=client.namespace,
                task_queue=task_queue,
                activities=activity_defs,
                identity=self.identity,
                executor=self._executor or concurrent.futures.ThreadPoolExecutor(max_workers=1),
                complete=self.workflow_processor.complete_activity
                if run_ahead and self.workflow_processor is not None else None,
                data_converter=converter,
                interceptors=chain,
            )
            self._pollers += self._make_pollers(
                f"/task-queues/{queue}/activity-tasks/poll",
                intercepted_process(chain, processor.process, activity=True, namespace=client.namespace,
                                    task_queue=task_queue),
                max_concurrent_activities,
                activity_pollers,
                max_tasks_per_poll,
                poll_wait_seconds,
            )
        self._stop: asyncio.Event | None = None
        self._background: asyncio.Task[None] | None = None

    def _make_pollers(
        self, path: str, process: Any, limit: int, count: int, per_poll: int, wait: float,
        answers: AnswerBatcher | None = None,
    ) -> list[Poller]:
        """``answers``: held while a poll's tasks start (workflow tasks: their workflows all
        wake before any answer leaves; poller.py Poller._start)."""
        # One set of limits and slots for all pollers of a kind: they see one backlog.
        limits = AdaptiveLimits(max_poll_size=max(1, per_poll), max_concurrency=max(1, limit))
        slots = Slots(limits.concurrency())
        return [
            Poller(
                self.client.transport,
                path,
                process=process,
                slots=slots,
                identity=self.identity,
                max_tasks=max(1, per_poll),
                wait_seconds=wait,
                reachability=self._reachability,
                limits=limits,
                answers=answers,
            )
            for _ in range(max(1, count))
        ]

    async def run(self) -> None:
        """Poll and process tasks until cancelled or shut down. Raises
        :class:`~kadence.exceptions.WorkerRefusedError` (after letting in-flight tasks finish)
        when the frontend keeps refusing the polls with 401/403."""
        if self._stop is not None:
            raise RuntimeError("this worker is already running")
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        polling = [loop.create_task(p.run(), name=f"kadence-poller-{i}") for i, p in enumerate(self._pollers)]
        stopping = loop.create_task(self._stop.wait(), name="kadence-worker-stop")
        refused: BaseException | None = None
        try:
            # A poller ends only when cancelled or refused (poller.py): either ends the worker.
            await asyncio.wait([stopping, *polling], return_when=asyncio.FIRST_COMPLETED)
            refused = next((t.exception() for t in polling if t.done() and not t.cancelled() and t.exception()),
                           None)
            if refused is not None:
                # Said at once: with `async with Worker(...)` it is raised only when the block ends.
                _log.error("worker %s stops, its tasks in flight finishing: %s", self.identity, refused)
        finally:
            for task in (stopping, *polling):
                task.cancel()
            await asyncio.gather(stopping, *polling, return_exceptions=True)
            if self.workflow_processor is not None:
                self.workflow_processor.close()  # no timer runs ahead here any more
            await self._drain()
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
        if refused is not None:
            raise refused

    async def _drain(self) -> None:
        in_flight = [t for p in self._pollers for t in p.running]
        if not in_flight:
            return
        _, still_running = await asyncio.wait(in_flight, timeout=self._graceful_timeout)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.wait(still_running, timeout=1.0)

    async def shutdown(self) -> None:
        """Stop polling, let in-flight tasks finish (up to the graceful timeout), return."""
        if self._stop is not None:
            self._stop.set()
        if self._background is not None:
            try:
                await self._background
            except asyncio.CancelledError:
                pass
            self._background = None

    async def __aenter__(self) -> Worker:
        self._background = asyncio.get_running_loop().create_task(self.run(), name="kadence-worker")
        await asyncio.sleep(0)  # let run() start before the body uses the worker
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
