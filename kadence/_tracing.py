"""The trace context of ``kadence_protocol.tracing`` (the active tracer and W3C propagation
shared with the services), re-exported for the SDK's modules; the SDK's own spans come from
its tracing interceptor (kadence/_tracing_interceptor.py)."""

from __future__ import annotations

from kadence_protocol.tracing import (
    TRACE_HEADERS,
    UNSET,
    Unset,
    configure,
    context_from_headers,
    context_from_traceparent,
    current_traceparent,
    http_headers,
    kafka_headers,
    record_status_code,
    tracer,
    use_traceparent,
)

__all__ = [
    "TRACE_HEADERS",
    "UNSET",
    "Unset",
    "configure",
    "context_from_headers",
    "context_from_traceparent",
    "current_traceparent",
    "http_headers",
    "kafka_headers",
    "record_status_code",
    "tracer",
    "use_traceparent",
]

