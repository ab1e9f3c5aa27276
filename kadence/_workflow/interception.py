"""The ends of a workflow run's interceptor chains (kadence/interceptor.py): inbound, the
calls into the workflow's code; outbound, what the SDK does for workflow code."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, cast

from kadence._workflow.children import ChildWorkflowHandle
from kadence._workflow.owned import Owned
from kadence.interceptor import (
    ContinueAsNewInput,
    ExecuteWorkflowInput,
    HandleQueryInput,
    HandleSignalInput,
    HandleUpdateInput,
    ScheduleActivityInput,
    ScheduleLocalActivityInput,
    SleepInput,
    StartChildWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowOutboundInterceptor,
)

if TYPE_CHECKING:
    pass

__all__ = ["ChainEnds", "SdkCalls", "WorkflowCalls"]


class WorkflowCalls(Owned, WorkflowInboundInterceptor):
    """The end of the inbound chain: the workflow's own methods."""

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        self._instance.outbound = outbound

    def execute_workflow(self, input: ExecuteWorkflowInput) -> Coroutine[Any, Any, Any]:
        # The run method's own coroutine, not one more around it: a coroutine (and the
        # input it holds) per cached run is what the collector's full passes walk. The
        # caller (WorkflowInstance._start) still sees a bad call raise where the run awaits.
        return cast("Coroutine[Any, Any, Any]", input.run_fn(*input.args))  # run is an `async def` (definition.py)

    def handle_signal(self, input: HandleSignalInput) -> Any:
        return input.handler(*input.args)

    def handle_query(self, input: HandleQueryInput) -> Any:
        return input.handler(*input.args)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        input.handler(*input.args)

    def handle_update(self, input: HandleUpdateInput) -> Any:
        return input.handler(*input.args)


class SdkCalls(Owned, WorkflowOutboundInterceptor):
    """The end of the outbound chain: what the instance does for workflow code."""

    def execute_activity(self, input: ScheduleActivityInput) -> Coroutine[Any, Any, Any]:
        # The instance's coroutine itself (awaited the same): no coroutine of this link, nor
        # its input, stays alive with every activity a cached run waits for.
        return self._instance.execute_activity(input.activity_type, input.args, input.options,
                                               input.cancellation_type, result_type=input.result_type)

    async def execute_local_activity(self, input: ScheduleLocalActivityInput) -> Any:
        return await self._instance.local_activities.execute(
            input.activity_type, input.fn, input.args, activity_id=input.activity_id,
            start_to_close_ms=input.start_to_close_ms, schedule_to_close_ms=input.schedule_to_close_ms,
            retry_policy=input.retry_policy, result_type=input.result_type)

    async def start_child_workflow(self, input: StartChildWorkflowInput) -> ChildWorkflowHandle[Any]:
        return await self._instance.children.start(input.workflow_type, input.args, input.options,
                                                   result_type=input.result_type)

    async def sleep(self, input: SleepInput) -> None:
        await asyncio.sleep(input.seconds)  # the workflow loop makes it a durable timer

    def continue_as_new(self, input: ContinueAsNewInput) -> NoReturn:
        from kadence._workflow.instance import ContinueAsNewError

        raise ContinueAsNewError(input.args, input.workflow_type, input.task_queue, input.memo,
                                 input.search_attributes)


class ChainEnds(WorkflowCalls, SdkCalls):  # type: ignore[misc]  # ends have no `next`
    """Both ends in one object (their methods do not overlap): one object and one weak
    reference per run instead of two each, for the collector's passes over cached runs."""
