"""The history service's exceptions; every one derives from ``HistoryError``."""

from __future__ import annotations


class HistoryError(Exception):
    """Root of the history service's errors."""


class ShardOwnershipLost(HistoryError):
    """Another owner bumped the shard's range_id: this process must stop writing it."""


class HistoryCorrupted(HistoryError):
    """An event does not follow the state it is applied to."""


class WorkflowNotNew(HistoryError):
    """A batch ran a start as of a new workflow, and the workflow has a run: nothing was
    written, and the batch runs again with the run looked up."""
