"""Public client API: :class:`Client`, :class:`WorkflowHandle`, and what listing workflows answers."""

from kadence._async_activity import AsyncActivityHandle
from kadence._client import Client, WorkflowHandle, WorkflowUpdateHandle
from kadence._visibility import WorkflowExecution, WorkflowExecutionCount

__all__ = ["AsyncActivityHandle", "Client", "WorkflowExecution", "WorkflowExecutionCount", "WorkflowHandle",
           "WorkflowUpdateHandle"]
