"""Trace context shared by the SDK and the services: the active tracer and W3C propagation.

Tracing is off until a tracer provider is configured, either explicitly with
:func:`configure` (the services and the tests do this) or by installing an SDK
``TracerProvider`` as the OpenTelemetry global (what an application embedding the
SDK usually does). While it is off every helper here returns before building a span,
a context or a header, so the hot paths pay one function call and an ``is None``.

Context crosses process boundaries in three carriers, always as W3C ``traceparent``
(and ``tracestate``): HTTP request headers, Kafka record headers (bytes values), and
the ``traceparent`` field of a poll answer's task.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Final, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Tracer, TracerProvider

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
    "trace_headers",
    "tracer",
    "use_traceparent",
]

INSTRUMENTATION = "kadence"
TRACE_HEADERS = ("traceparent", "tracestate")
# W3C Trace Context caps tracestate at 512 characters (traceparent is 55).
MAX_TRACE_HEADER_BYTES = 512

class Unset(enum.Enum):
    """The type of :data:`UNSET`: "not given", where ``None`` means "off"."""

    UNSET = enum.auto()


UNSET: Final = Unset.UNSET
_explicit: TracerProvider | Literal[Unset.UNSET] | None = UNSET  # UNSET: follow the global provider
_cached: tuple[TracerProvider, Tracer] | None = None


def configure(provider: TracerProvider | Literal[Unset.UNSET] | None = UNSET) -> None:
    """Use ``provider`` for every Kadence span in this process; ``None`` turns tracing off.

    Called without an argument it goes back to following the OpenTelemetry global
    provider. Unlike ``trace.set_tracer_provider`` this may be called any number of
    times, which is what lets a test swap in an in-memory exporter and take it out again.
    """
    global _explicit, _cached
    _explicit = provider
    _cached = None


#: The SDK's global provider, read where OpenTelemetry keeps it: ``trace.get_tracer_provider()``
#: looks the environment up on every call (a KeyError raised and caught while no provider is
#: set), which was 4 % of a worker's CPU. The global is set once (OpenTelemetry refuses to
#: replace it), so reading it stays right when it is set after the worker started.
_GLOBAL_READABLE: Final = hasattr(trace, "_TRACER_PROVIDER")
#: Whether OpenTelemetry is to load a provider named by the environment (read at import):
#: then its own lookup runs until it has set the global.
_GLOBAL_FROM_ENV: Final = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _global_provider() -> TracerProvider | None:
    """The OpenTelemetry global provider, or ``None`` while none is set."""
    if _GLOBAL_READABLE:
        provider: TracerProvider | None = trace._TRACER_PROVIDER  # private: see _GLOBAL_READABLE
        if provider is not None or not _GLOBAL_FROM_ENV:
            return provider
    return trace.get_tracer_provider()


def tracer() -> Tracer | None:
    """The tracer to use now, or ``None`` when tracing is off."""
    global _cached
    provider = _global_provider() if _explicit is UNSET else _explicit
    if provider is None:
        return None
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    t = provider.get_tracer(INSTRUMENTATION)
    _cached = (provider, t)
    return t


# ---- carriers -------------------------------------------------------------------------------


class _BytesGetter(Getter[Mapping[str, bytes]]):
    def get(self, carrier: Mapping[str, bytes], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[str, bytes]) -> list[str]:
        return list(carrier)


class _BytesSetter(Setter[dict[str, bytes]]):
    def set(self, carrier: dict[str, bytes], key: str, value: str) -> None:
        carrier[key] = value.encode("latin-1")


_BYTES_GETTER = _BytesGetter()
_BYTES_SETTER = _BytesSetter()


def context_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context | None:
    """The context carried by Kafka record headers, or ``None`` when they carry none."""
    if not headers:
        return None
    carrier = {k: v for k, v in headers if k in TRACE_HEADERS}
    if "traceparent" not in carrier:
        return None
    return propagate.extract(carrier, getter=_BYTES_GETTER)


def trace_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[tuple[str, bytes], ...]:
    """The trace headers of a consumed record worth carrying on to what it causes.

    Kafka lets a header have no value, and any producer may write one of any size: such a
    header is dropped rather than copied onto every event and record the command writes.
    """
    return tuple((k, v) for k, v in headers or () if k in TRACE_HEADERS
                 and isinstance(v, bytes) and len(v) <= MAX_TRACE_HEADER_BYTES)


def kafka_headers(ctx: Context | None = None) -> list[tuple[str, bytes]]:
    """``traceparent``/``tracestate`` of ``ctx`` (default: the current context) as record headers."""
    carrier: dict[str, bytes] = {}
    propagate.inject(carrier, context=ctx, setter=_BYTES_SETTER)
    return [(k, v) for k, v in carrier.items() if k in TRACE_HEADERS]


def context_from_traceparent(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, or ``None`` when tracing is off or no span is active."""
    if tracer() is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def http_headers() -> dict[str, str] | None:
    """Request headers carrying the current context; ``None`` when there is nothing to carry."""
    if tracer() is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def record_status_code(status: int) -> None:
    """Note an HTTP answer's status on the current span (a no-op on a non-recording span)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)


_NOTHING = contextlib.nullcontext()


def use_traceparent(traceparent: str | None) -> contextlib.AbstractContextManager[None]:
    """Make ``traceparent`` the current context for the block (nothing when tracing is off)."""
    if not traceparent or tracer() is None:
        return _NOTHING
    return _attached(propagate.extract({"traceparent": traceparent}))


@contextlib.contextmanager
def _attached(ctx: Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
