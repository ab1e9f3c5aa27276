"""History: shard loops that fold commands into workflow state in PostgreSQL."""

from .service import HistoryService
from .state import MutableState, apply, rebuild

__all__ = ["HistoryService", "MutableState", "apply", "rebuild"]
