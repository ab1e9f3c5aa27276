"""kadence_protocol.tracing.trace_headers: what of a consumed record's headers a command
carries on (a Kafka header may have no value, and any producer may write one)."""

from __future__ import annotations

from kadence_protocol.tracing import MAX_TRACE_HEADER_BYTES, trace_headers

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_only_trace_headers_with_a_value_of_bounded_size_are_kept() -> None:
    headers = [("traceparent", PARENT), ("tracestate", None), ("kadence-principal", b"billing"),
               ("tracestate", b"x" * (MAX_TRACE_HEADER_BYTES + 1)), ("tracestate", b"k=v")]
    assert trace_headers(headers) == (("traceparent", PARENT), ("tracestate", b"k=v"))


def test_no_headers_carry_nothing() -> None:
    assert trace_headers(None) == ()
    assert trace_headers([("traceparent", None)]) == ()
