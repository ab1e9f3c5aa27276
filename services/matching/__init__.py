"""Matching: task queues over the ``kadence.tasks`` partitions, sync match and backlog.

Other services reach it through its client, ``services.common.matching``; this package
exports the service itself."""

from .service import MatchingService

__all__ = ["MatchingService"]
