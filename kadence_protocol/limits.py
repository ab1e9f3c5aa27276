"""Limits both sides of the HTTP API hold to."""

from __future__ import annotations

__all__ = ["MAX_REQUEST_BYTES"]

#: The largest HTTP request body the frontend takes (it answers 413 above it). Shared by
#: the frontend and the worker, which keeps its batches of task answers under it.
MAX_REQUEST_BYTES = 1 << 20
