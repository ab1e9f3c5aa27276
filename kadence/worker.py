"""Public worker API: :class:`Worker`."""

from kadence._worker.worker import Worker

__all__ = ["Worker"]
