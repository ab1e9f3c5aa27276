"""The audit's exception root."""

from __future__ import annotations


class AuditError(Exception):
    """The audit cannot run as asked (an unreadable topic, a target database not empty)."""
