"""Public client API: :class:`Client` and :class:`WorkflowHandle`."""

from kadence._client import Client, WorkflowHandle, WorkflowUpdateHandle

__all__ = ["Client", "WorkflowHandle", "WorkflowUpdateHandle"]
