"""Public client API: :class:`Client` and :class:`WorkflowHandle`."""

from kadence._client import Client, WorkflowHandle

__all__ = ["Client", "WorkflowHandle"]
