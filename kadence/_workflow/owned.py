"""A part of one workflow instance that holds it weakly (children, local activities, the
interceptor chain's last links): a closed run's objects are then freed by reference
counting, not left to the collector."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kadence._workflow.instance import WorkflowInstance


class Owned:
    def __init__(self, instance: WorkflowInstance) -> None:
        self._owner = weakref.ref(instance)

    @property
    def _instance(self) -> WorkflowInstance:
        instance = self._owner()
        if instance is None:
            raise RuntimeError("the workflow instance is gone")
        return instance
