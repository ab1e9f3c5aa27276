"""History: shard loops that fold commands into workflow state in PostgreSQL; ``audit/`` checks
history's log (``kadence.history``) against it with the same fold (``kadence audit``)."""

from .service import HistoryService
from .state import MutableState, apply, rebuild

__all__ = ["HistoryService", "MutableState", "apply", "rebuild"]
