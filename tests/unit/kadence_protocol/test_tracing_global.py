"""kadence_protocol.tracing follows the OpenTelemetry global provider without asking
OpenTelemetry on every call: a provider set after the first look is still honoured, and one
named by the environment is loaded. Each case runs in a fresh interpreter, because the
global can be set only once per process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)


def _run(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=50,
                          env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_global_provider_set_after_the_first_look_is_honoured() -> None:
    out = _run("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from kadence_protocol import tracing

        assert tracing.tracer() is None and tracing.tracer() is None  # off, and asked twice
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        t = tracing.tracer()
        assert t is not None and tracing.tracer() is t
        with t.start_as_current_span("x"):
            assert tracing.current_traceparent() is not None
        print([s.name for s in exporter.get_finished_spans()])
    """)
    assert out == "['x']"


def test_a_provider_named_by_the_environment_is_loaded() -> None:
    out = _run("""
        from opentelemetry.sdk.trace import TracerProvider
        from kadence_protocol import tracing

        t = tracing.tracer()
        assert t is not None
        from opentelemetry import trace
        print(type(trace.get_tracer_provider()) is TracerProvider)
    """, OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider")
    assert out == "True"


def test_configure_still_overrides_and_turns_off() -> None:
    out = _run("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from kadence_protocol import tracing

        trace.set_tracer_provider(TracerProvider())
        assert tracing.tracer() is not None
        tracing.configure(None)
        assert tracing.tracer() is None
        tracing.configure()
        assert tracing.tracer() is not None
        tracing.configure(trace.NoOpTracerProvider())
        print(tracing.tracer())
    """)
    assert out == "None"
