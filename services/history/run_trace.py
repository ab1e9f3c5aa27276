"""A run's trace: what history does for a run continues the trace its start began.

A command carries its caller's trace context (W3C ``traceparent``/``tracestate``) in its
record headers, and the records it causes carry it on (docs/protocol.md#trace-context).
Some of what history does for a run has no such caller, or another one:

- a timer's firing (a user timer, a timeout, a retry's backoff) comes from history's own
  timer queue, with no headers;
- a task dispatched again (redispatch.py), after a kill -9 or a lost hand-over, is rebuilt
  from the run's state alone;
- a signal, cancellation or update from a client is a request of the client's own trace.

So a run keeps the trace headers of the command that started it
(``MutableState.trace_context``, in its snapshot; a continue-as-new, a retry and a child
take their starter's, so a chain stays in one trace), and what history writes for the run
carries them whenever the command at hand is not already in that trace. The caller's own
records (the reply to a signal) keep the caller's context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kadence_protocol.tracing import TRACE_HEADERS

Headers = tuple[tuple[str, bytes], ...]


def context_of(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The trace context of ``headers`` as a run keeps it (none without a ``traceparent``)."""
    kept = {k: v.decode("ascii", "replace") for k, v in headers if k in TRACE_HEADERS}
    return kept if "traceparent" in kept else {}


def headers_of(context: Mapping[str, str]) -> Headers:
    return tuple((k, context[k].encode("ascii")) for k in TRACE_HEADERS if k in context)


def _trace_id(traceparent: str | bytes | None) -> str | None:
    # version "-" trace-id "-" parent-id "-" flags (W3C Trace Context)
    if traceparent is None:
        return None
    text = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
    parts = text.split("-")
    return parts[1] if len(parts) >= 4 else None


def for_run(headers: Headers, context: Mapping[str, str]) -> Headers:
    """The headers of what history writes for a run with ``context`` while it runs a command
    (or a timer) with ``headers``: those, when they are in the run's trace or the run has
    none; else the run's."""
    if not context:
        return headers
    theirs = _trace_id(next((v for k, v in headers if k == "traceparent"), None))
    if theirs is not None and theirs == _trace_id(context.get("traceparent")):
        return headers
    return headers_of(context)
