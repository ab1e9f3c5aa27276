"""Audit replay of ``kadence.history``: fold every run through the history service's own
fold, verify ids, duplicates and the hash chain, compare with PostgreSQL, and rebuild a
database from the topic alone. ``kadence audit`` is the command; ``services.history.audit.stream``
runs the same checks continuously as a faust-streaming app."""

from .errors import AuditError
from .replay import Divergence, Replay, RunAudit, RunKey, compare_run
from .run import AuditReport, audit

__all__ = ["AuditError", "AuditReport", "Divergence", "Replay", "RunAudit", "RunKey", "audit", "compare_run"]
