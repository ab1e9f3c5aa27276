from __future__ import annotations

from services.history import run_trace

RUN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SAME_TRACE = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_run_keeps_the_trace_headers_of_its_start() -> None:
    headers = (("traceparent", RUN.encode()), ("tracestate", b"k=v"))
    assert run_trace.context_of(headers) == {"traceparent": RUN, "tracestate": "k=v"}
    assert run_trace.headers_of(run_trace.context_of(headers)) == headers
    assert run_trace.context_of((("tracestate", b"k=v"),)) == {}  # no traceparent: no trace
    assert run_trace.context_of(()) == {}


def test_what_a_run_writes_stays_in_its_trace() -> None:
    context = {"traceparent": RUN}
    in_trace = (("traceparent", SAME_TRACE.encode()),)
    assert run_trace.for_run(in_trace, context) == in_trace  # a worker's answer: its own span
    assert run_trace.for_run((("traceparent", OTHER.encode()),), context) == (("traceparent", RUN.encode()),)
    assert run_trace.for_run((), context) == (("traceparent", RUN.encode()),)  # a timer's firing
    assert run_trace.for_run((("traceparent", b"junk"),), context) == (("traceparent", RUN.encode()),)
    assert run_trace.for_run((("traceparent", OTHER.encode()),), {}) == (("traceparent", OTHER.encode()),)
