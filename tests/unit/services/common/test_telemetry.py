"""Telemetry set-up from the environment and W3C propagation through Kafka headers (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kadence_protocol import tracing as _tracing
from services.common import telemetry

pytestmark = pytest.mark.timeout(10)

_OTEL_VARS = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
              "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "KADENCE_METRICS_PORT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    telemetry.reset()


def test_nothing_configured_means_no_tracer() -> None:
    signals = telemetry.setup_from_env("kadence-test")
    try:
        assert _tracing.tracer() is None
        assert telemetry.metrics() is None
        assert signals.metrics_url is None
    finally:
        signals.shutdown()


def test_console_exporter_and_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    signals = telemetry.setup_from_env("kadence-test", traces="console")
    try:
        assert _tracing.tracer() is not None
        assert signals.tracer_provider.resource.attributes["service.name"] == "from-env"
    finally:
        signals.shutdown()
    assert _tracing.tracer() is None


def test_an_otlp_endpoint_alone_selects_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    signals = telemetry.setup_from_env("kadence-test")
    try:
        assert _tracing.tracer() is not None
        assert signals.tracer_provider.resource.attributes["service.name"] == "kadence-test"
    finally:
        signals.shutdown()


def test_sdk_disabled_and_unknown_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown exporter"):
        telemetry.setup_from_env("kadence-test", traces="zipkin-please")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    signals = telemetry.setup_from_env("kadence-test", traces="console")
    assert signals.tracer_provider is None and _tracing.tracer() is None


def test_kafka_headers_carry_the_span() -> None:
    provider = TracerProvider()
    telemetry.configure(tracer_provider=provider)
    tracer = _tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("parent") as span:
        headers = _tracing.kafka_headers()
        traceparent = _tracing.current_traceparent()
    assert [k for k, _ in headers] == ["traceparent"]
    ctx = _tracing.context_from_headers([("other", b"x"), *headers])
    assert ctx is not None
    from opentelemetry import trace

    carried = trace.get_current_span(ctx).get_span_context()
    assert carried.trace_id == span.get_span_context().trace_id
    assert traceparent is not None and f"{span.get_span_context().span_id:016x}" in traceparent
    assert _tracing.context_from_headers([("other", b"x")]) is None
    provider.shutdown()


@pytest.mark.parametrize("raw", ["abc", "-1", "65536", "70000"])
def test_a_metrics_port_out_of_range_is_refused_naming_it(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service says which variable is wrong (one line, exit 1) rather than the bind's traceback."""
    monkeypatch.setenv("KADENCE_METRICS_PORT", raw)
    with pytest.raises(ValueError, match=f"KADENCE_METRICS_PORT must be a port number \\(0 to 65535\\), got '{raw}'"):
        telemetry.setup_from_env("kadence-test")
    assert telemetry.metrics() is None
