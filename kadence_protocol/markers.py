"""Marker names with a meaning to the server: a ``RecordMarker`` command of one of these
names is read by the frontend and the projections, not only kept in history."""

from __future__ import annotations

__all__ = ["SEARCH_ATTRIBUTES_MARKER"]

#: The marker that workflow.upsert_search_attributes records; the frontend checks its details
#: against the namespace's registry and the visibility projection merges them into the row.
SEARCH_ATTRIBUTES_MARKER = "kadence:search_attributes"
