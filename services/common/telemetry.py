"""Traces and metrics of the services: set-up from the environment, and the wrappers that emit them.

Set-up follows the OpenTelemetry conventions: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console``, ``none``, or a comma-separated list), ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and the other ``OTEL_EXPORTER_OTLP_*`` variables
(read by the OTLP exporter itself), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_SDK_DISABLED``. One deviation: with ``OTEL_TRACES_EXPORTER`` unset, spans go to
OTLP only when an OTLP endpoint is set, so a service started without any telemetry
configuration builds no spans at all. Metrics are served for Prometheus on
``KADENCE_METRICS_HOST`` (default 127.0.0.1) : ``KADENCE_METRICS_PORT`` (unset: no endpoint);
with ``KADENCE_INTERNAL_KEY`` set a scrape must carry it as a bearer token, and without it
a host beyond loopback is refused (internal_auth.py).

The instrumentation itself is wrappers, not code inside the handlers: a Kafka producer
that makes a PRODUCER span per record and carries the context in the record headers,
an aiohttp middleware for the SERVER span of each API call, a context manager for the
CONSUMER span of each consumed record, and a decorator for long polls. Each checks
first whether tracing or metrics are on, and does nothing more when they are off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from kadence_protocol import tracing as _tracing
from kadence_protocol.tracing import TRACE_HEADERS, UNSET, Unset, context_from_headers, kafka_headers, tracer
from services.common import internal_auth

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

__all__ = [
    "Metrics",
    "Telemetry",
    "TracingProducer",
    "configure",
    "consumer_span",
    "http_server_middleware",
    "instrument_poll",
    "metrics",
    "register_read_budgets",
    "register_shard",
    "register_visibility",
    "reset",
    "setup_from_env",
    "unregister_shard",
    "unregister_visibility",
]

# ---- metrics -----------------------------------------------------------------------------------


class ShardGauges(Protocol):
    """What a history shard exposes to the observable gauges (read from the exporter's thread)."""

    shard_id: int

    def consumer_lag(self) -> int | None: ...

    def outbox_backlog(self) -> int: ...


_shards: weakref.WeakSet[Any] = weakref.WeakSet()


def register_shard(shard: ShardGauges) -> None:
    _shards.add(shard)


def unregister_shard(shard: ShardGauges) -> None:
    _shards.discard(shard)


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for shard in list(_shards):
        lag = shard.consumer_lag()
        if lag is not None:
            yield Observation(lag, {"kadence.shard_id": shard.shard_id})


def _observe_outbox(options: CallbackOptions) -> Iterable[Observation]:
    for shard in list(_shards):
        yield Observation(shard.outbox_backlog(), {"kadence.shard_id": shard.shard_id})


class VisibilityGauges(Protocol):
    """What a visibility consumer exposes to its lag gauge."""

    def lag(self) -> dict[int, int]: ...


_visibility: weakref.WeakSet[Any] = weakref.WeakSet()


def register_visibility(consumer: VisibilityGauges) -> None:
    _visibility.add(consumer)


def unregister_visibility(consumer: VisibilityGauges) -> None:
    _visibility.discard(consumer)


def _observe_visibility_lag(options: CallbackOptions) -> Iterable[Observation]:
    for consumer in list(_visibility):
        for partition, lag in consumer.lag().items():
            yield Observation(lag, {"kadence.partition": partition})


class ReadGauges(Protocol):
    """What a frontend's read shares (read_budgets.py) expose to their gauges: per share,
    its name, slots in use and reads waiting."""

    def gauges(self) -> list[tuple[str, int, int]]: ...


_read_budgets: weakref.WeakSet[Any] = weakref.WeakSet()


def register_read_budgets(budgets: ReadGauges) -> None:
    _read_budgets.add(budgets)


def _read_totals() -> dict[str, tuple[int, int]]:
    """Slots in use and reads waiting per share, summed over this process's frontends."""
    totals: dict[str, tuple[int, int]] = {}
    for budgets in list(_read_budgets):
        for share, in_use, waiting in budgets.gauges():
            held, queued = totals.get(share, (0, 0))
            totals[share] = (held + in_use, queued + waiting)
    return totals


def _observe_reads_in_use(options: CallbackOptions) -> Iterable[Observation]:
    for share, (in_use, _) in _read_totals().items():
        yield Observation(in_use, {"kadence.read_share": share})


def _observe_reads_waiting(options: CallbackOptions) -> Iterable[Observation]:
    for share, (_, waiting) in _read_totals().items():
        yield Observation(waiting, {"kadence.read_share": share})


class Metrics:
    """The Kadence instruments of one meter provider."""

    def __init__(self, meter: Meter) -> None:
        self.workflows_started = meter.create_counter(
            "kadence.workflows.started", unit="{workflow}", description="Workflow runs started")
        self.workflows_completed = meter.create_counter(
            "kadence.workflows.completed", unit="{workflow}", description="Workflow runs completed")
        self.workflows_failed = meter.create_counter(
            "kadence.workflows.failed", unit="{workflow}", description="Workflow runs failed or timed out")
        self.schedule_to_start = meter.create_histogram(
            "kadence.task.schedule_to_start", unit="s",
            description="Time from a task's scheduling in history to its hand-over to a worker's poll",
            explicit_bucket_boundaries_advisory=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                 1, 2.5, 5, 10, 30, 60, 300])
        self.batch_size = meter.create_histogram(
            "kadence.history.batch.size", unit="{item}",
            description="Commands and timer firings folded in one shard-loop transaction",
            explicit_bucket_boundaries_advisory=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000])
        # Namespaces and schedules (services/history/retention.py, scheduler.py).
        self.retention_rows_deleted = meter.create_counter(
            "kadence.retention.rows_deleted", unit="{row}",
            description="Rows of closed runs past their namespace's retention deleted, by table")
        self.schedule_actions = meter.create_counter(
            "kadence.schedule.actions", unit="{action}",
            description="Schedule firings by result: started, skipped, buffered, missed (outside catch-up)")
        self.requests_refused = meter.create_counter(
            "kadence.frontend.requests.refused", unit="{request}",
            description="Calls a frontend refused (429) as over a namespace's limit, by namespace and limit")
        # The frontend's read shares of its pool (read_budgets.py, decision 0020).
        self.reads_waited = meter.create_counter(
            "kadence.frontend.reads.waited", unit="{read}",
            description="Bounded reads that found their share of the pool full and waited for a slot, by kind")
        self.reads_gave_up = meter.create_counter(
            "kadence.frontend.reads.gave_up", unit="{read}",
            description="Bounded reads that found no slot within their bound (503), by kind and the share"
                        " that was full")
        meter.create_observable_gauge(
            "kadence.frontend.reads.in_use", callbacks=[_observe_reads_in_use], unit="{connection}",
            description="Slots of each read share in use (a kind's, or all_reads: the reads together)")
        meter.create_observable_gauge(
            "kadence.frontend.reads.waiting", callbacks=[_observe_reads_waiting], unit="{read}",
            description="Bounded reads waiting for a slot of each share")
        self.polls_waiting = meter.create_up_down_counter(
            "kadence.polls.waiting", unit="{poll}", description="Task long polls waiting in the frontend")
        meter.create_observable_gauge(
            "kadence.history.shard.lag", callbacks=[_observe_lag], unit="{record}",
            description="kadence.requests records not yet processed by the shard (log end - position)")
        meter.create_observable_gauge(
            "kadence.history.outbox.backlog", callbacks=[_observe_outbox], unit="{row}",
            description="Committed outbox rows waiting for the shard's relay")
        meter.create_observable_gauge(
            "kadence.visibility.lag", callbacks=[_observe_visibility_lag], unit="{record}",
            description="kadence.history records not yet projected into visibility (log end - position)")
        self.visibility_delay = meter.create_histogram(
            "kadence.visibility.delay", unit="s",
            description="Time from a run's newest event to its visibility row being written",
            explicit_bucket_boundaries_advisory=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300])


_metrics: Metrics | None = None


def metrics() -> Metrics | None:
    """The instruments, or ``None`` when metrics are off."""
    return _metrics


def configure(*, tracer_provider: TracerProvider | Literal[Unset.UNSET] | None = UNSET,
              meter_provider: MeterProvider | Literal[Unset.UNSET] | None = UNSET) -> None:
    """Install providers for this process (either may be ``None`` to turn that signal off).

    Unlike the OpenTelemetry globals this can be called again, so tests can install an
    in-memory exporter and remove it. A tracer provider left unset follows the global one.
    """
    global _metrics
    if tracer_provider is not UNSET:
        _tracing.configure(tracer_provider)
    if meter_provider is not UNSET:
        _metrics = None if meter_provider is None else Metrics(meter_provider.get_meter("kadence"))


def reset() -> None:
    """Back to the defaults: tracing follows the OpenTelemetry global provider, metrics are off."""
    global _metrics
    _tracing.configure()
    _metrics = None


# ---- set-up from the environment ---------------------------------------------------------------


@dataclass
class Telemetry:
    """What :func:`setup_from_env` installed; :meth:`shutdown` flushes and removes it."""

    tracer_provider: Any = None
    meter_provider: Any = None
    metrics_server: WSGIServer | None = None
    metrics_url: str | None = None
    installed_tracing: bool = False

    def shutdown(self) -> None:
        if self.installed_tracing:
            _tracing.configure()  # back to following the OpenTelemetry global provider
        if self.meter_provider is not None:
            configure(meter_provider=None)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


_CONSOLE_ATTRIBUTES = (("kadence.workflow_id", "workflow_id"), ("kadence.workflow_type", "workflow_type"),
                       ("messaging.destination.partition.id", "partition"), ("messaging.kafka.offset", "offset"),
                       ("http.response.status_code", "status"))


def _one_line(span: Any) -> str:
    """Console format: one line per span, enough to follow a trace in a terminal."""
    ctx = span.context
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else "-" * 16
    ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    service = span.resource.attributes.get("service.name", "")
    attrs = " ".join(f"{short}={span.attributes[k]}" for k, short in _CONSOLE_ATTRIBUTES if k in span.attributes)
    return (f"trace {ctx.trace_id:032x} span {ctx.span_id:016x} parent {parent} {service} "
            f"{span.kind.name} {span.name!r} {ms:.1f}ms {attrs}\n")


def _tracer_provider(service_name: str, exporters: list[str]) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # OTEL_SERVICE_NAME, when set, wins over the service's own name.
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name})
    provider = SdkTracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(formatter=_one_line)))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (use otlp, console or none)")
    return provider


def setup_from_env(service_name: str, *, traces: str | None = None, metrics_port: int | None = None,
                   metrics_host: str | None = None) -> Telemetry:
    """Install tracing and metrics as the environment asks; arguments override it.

    ``traces``: ``otlp``, ``console``, ``none`` or a comma-separated list (default:
    ``OTEL_TRACES_EXPORTER``). ``metrics_port``: serve Prometheus metrics there
    (default: ``KADENCE_METRICS_PORT``; 0 picks a free port; unset means no endpoint).
    """
    out = Telemetry()
    if _env_flag("OTEL_SDK_DISABLED"):
        return out
    spec = traces if traces is not None else os.environ.get("OTEL_TRACES_EXPORTER", "")
    if not spec.strip() and (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                             or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        spec = "otlp"
    exporters = [e.strip().lower() for e in spec.split(",") if e.strip() and e.strip().lower() != "none"]
    tracing: Any = UNSET
    if exporters:
        tracing = out.tracer_provider = _tracer_provider(service_name, exporters)
    elif isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        # Off, and said so explicitly: the per-record "is tracing on?" check becomes a
        # global read instead of a look at the OpenTelemetry global provider.
        tracing = None
    if metrics_port is None:
        raw = os.environ.get("KADENCE_METRICS_PORT", "").strip()
        try:
            metrics_port = int(raw) if raw else None
        except ValueError:
            metrics_port = -1
        # Checked here: the HTTP server's own bind would fail with a traceback, not a line naming it.
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ValueError(f"KADENCE_METRICS_PORT must be a port number (0 to 65535), got {raw!r}")
    if metrics_port is not None:
        host = metrics_host or os.environ.get("KADENCE_METRICS_HOST") or "127.0.0.1"
        key, insecure = internal_auth.from_env()
        internal_auth.check_bind("the metrics endpoint", host, key=key, insecure=insecure)
        out.meter_provider, out.metrics_server, out.metrics_url = _prometheus(service_name, host, metrics_port, key)
    configure(tracer_provider=tracing,
              meter_provider=out.meter_provider if out.meter_provider is not None else UNSET)
    out.installed_tracing = tracing is not UNSET
    return out


def _prometheus(service_name: str, host: str, port: int, key: str = "") -> tuple[Any, WSGIServer, str]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server

    # A registry of our own: the process-wide default one would collect a second
    # reader's metrics twice when a process (a test run) sets telemetry up again.
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name})
    provider = SdkMeterProvider(resource=resource, metric_readers=[reader])
    if key:  # KADENCE_INTERNAL_KEY: every scrape must carry it
        server = _guarded_server(host, port, internal_auth.wsgi_guard(make_wsgi_app(registry), key))
    else:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    return provider, server, f"http://{host}:{bound}/metrics"


def _guarded_server(host: str, port: int, app: internal_auth.WsgiApp) -> WSGIServer:
    """prometheus_client's server, with the key checked in front of its WSGI app."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no line per scrape on stderr
            pass

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True).start()
    return server


# ---- Kafka -------------------------------------------------------------------------------------


def _key_attributes(topic: str, key: bytes | None, attributes: dict[str, Any]) -> None:
    if key is None:
        return
    text = key.decode("utf-8", "replace")
    attributes["messaging.kafka.message.key"] = text
    namespace, sep, rest = text.partition("/")
    if not sep:
        return
    attributes["kadence.namespace"] = namespace
    # kadence.tasks is keyed by namespace/task_queue; requests and history by namespace/workflow_id.
    attributes["kadence.task_queue" if topic == "kadence.tasks" else "kadence.workflow_id"] = rest


def _sent(span: Span, future: Any) -> None:
    if future.cancelled():
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
    elif future.exception() is not None:
        exc = future.exception()
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    else:
        metadata = future.result()
        span.set_attribute("messaging.destination.partition.id", str(metadata.partition))
        span.set_attribute("messaging.kafka.offset", int(metadata.offset))
    span.end()


class TracingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """An aiokafka producer that makes a PRODUCER span per record when tracing is on.

    The span's parent is the context in the record's own ``traceparent`` header when it
    has one (an outbox row carries the context of the command that wrote it), else the
    current context (the API call being served). The record leaves with the span's
    context in its headers, so the consumer's span is the producer span's child.
    """

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> Any:
        t = tracer()
        if t is None:
            return await super().send(topic, value, key, partition, timestamp_ms, headers)
        attributes: dict[str, Any] = {
            "messaging.system": "kafka", "messaging.destination.name": topic,
            "messaging.operation.type": "publish", "messaging.operation.name": "send",
        }
        _key_attributes(topic, key, attributes)
        if value is not None:
            attributes["messaging.message.body.size"] = len(value)
        span = t.start_span(f"send {topic}", context=context_from_headers(headers), kind=SpanKind.PRODUCER,
                            attributes=attributes)
        carried = [(k, v) for k, v in (headers or ()) if k not in TRACE_HEADERS]
        carried += kafka_headers(trace.set_span_in_context(span))
        try:
            future = await super().send(topic, value, key, partition, timestamp_ms, carried)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        future.add_done_callback(functools.partial(_sent, span))
        # Read by kafka.enqueue_keyed as this call returns (no await in between): a command
        # handed over in this process carries the very headers its record went out with.
        self.sent_headers = tuple(carried)
        return future


class Consumed:
    """The CONSUMER span of one record, as :func:`consumer_span` hands it to the consumer."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None) -> None:
        self.span = span

    @property
    def traceparent(self) -> str | None:
        return None if self.span is None else dict(self.headers()).get("traceparent", b"").decode() or None

    def headers(self) -> list[tuple[str, bytes]]:
        """Trace headers that make the next hop a child of this span."""
        return [] if self.span is None else kafka_headers(trace.set_span_in_context(self.span))

    def annotate(self, attributes: dict[str, Any]) -> None:
        if self.span is not None:
            self.span.set_attributes(attributes)

    def fail(self, reason: str) -> None:
        if self.span is not None:
            self.span.set_status(Status(StatusCode.ERROR, reason[:200]))


_NOT_TRACED = contextlib.nullcontext(Consumed(None))


@contextlib.contextmanager
def _consumer_span(t: Any, record: ConsumerRecord[Any, Any], group: str) -> Iterator[Consumed]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka", "messaging.destination.name": record.topic,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": str(record.partition), "messaging.kafka.offset": record.offset,
    }
    _key_attributes(record.topic, record.key, attributes)
    with t.start_as_current_span(f"process {record.topic}", context=context_from_headers(record.headers),
                                 kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield Consumed(span)


def consumer_span(record: ConsumerRecord[Any, Any], group: str) -> contextlib.AbstractContextManager[Consumed]:
    """A CONSUMER span for processing ``record``, parented by its ``traceparent`` header.

    With tracing off this is a shared no-op context whose :class:`Consumed` has no span.
    """
    t = tracer()
    if t is None:
        return _NOT_TRACED
    return _consumer_span(t, record, group)


# ---- co-location (services/common/colocation.py) --------------------------------------------------


def tracing() -> bool:
    """Whether spans are being made now."""
    return tracer() is not None


def current_trace_headers() -> tuple[tuple[str, bytes], ...]:
    """The trace headers of the current context (none with tracing off): what a command the
    frontend queues carries, on the broker and across the co-located hand-over alike."""
    if tracer() is None:
        return ()
    return tuple(kafka_headers())


def handed_span(topic: str, key: bytes | None, headers: Sequence[tuple[str, bytes]], group: str,
                attributes: dict[str, Any] | None = None) -> contextlib.AbstractContextManager[Consumed]:
    """The CONSUMER span of a record handed over in this process instead of published to
    ``topic`` (a task for matching here): the span its consumer would make of the record,
    parented by ``headers``. A no-op with tracing off."""
    t = tracer()
    if t is None:
        return _NOT_TRACED
    return _handed_span(t, topic, key, headers, group, attributes or {})


@contextlib.contextmanager
def _handed_span(t: Any, topic: str, key: bytes | None, headers: Sequence[tuple[str, bytes]],
                 group: str, extra: dict[str, Any]) -> Iterator[Consumed]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka", "messaging.destination.name": topic,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.consumer.group.name": group, "kadence.handed_over": True,
    }
    _key_attributes(topic, key, attributes)
    attributes.update(extra)
    with t.start_as_current_span(f"process {topic}", context=context_from_headers(headers),
                                 kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield Consumed(span)


# ---- HTTP --------------------------------------------------------------------------------------

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def http_server_middleware(request: web.Request, handler: RouteHandler) -> web.StreamResponse:
    """A SERVER span per API call, parented by the caller's ``traceparent`` header."""
    t = tracer()
    if t is None:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    if route.endswith("/poll") and "traceparent" not in request.headers:
        # A worker's idle long poll: the task it brings has its own trace (the worker's spans,
        # kadence/_tracing_interceptor.py).
        return await handler(request)
    attributes: dict[str, Any] = {"http.request.method": request.method, "http.route": route,
                                  "url.path": request.path, "url.scheme": request.scheme}
    for name in ("namespace", "workflow_id", "task_queue"):
        value = request.match_info.get(name)
        if value is not None:
            attributes[f"kadence.{name}"] = value
    parent = propagate.extract(request.headers)
    with t.start_as_current_span(f"{request.method} {route}", context=parent, kind=SpanKind.SERVER,
                                 attributes=attributes) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


# ---- long polls --------------------------------------------------------------------------------

PollFn = Callable[[Any, Any, str], Awaitable[list[Any]]]


def instrument_poll(poll: PollFn) -> PollFn:
    """Wrap a frontend poll ``(self, request, kind) -> tasks``: count waiting polls, and
    record each task's schedule-to-start latency (now - the task's ``scheduled_time``)."""

    @functools.wraps(poll)
    async def wrapper(self: Any, req: Any, kind: str) -> list[Any]:
        m = _metrics
        if m is None:
            return await poll(self, req, kind)
        waiting = {"kadence.task_kind": kind}
        m.polls_waiting.add(1, waiting)
        try:
            tasks = await poll(self, req, kind)
        finally:
            m.polls_waiting.add(-1, waiting)
        now_ms = time.time() * 1000
        attributes = {"kadence.task_kind": kind, "kadence.namespace": req.namespace,
                      "kadence.task_queue": req.task_queue}
        for task in tasks:
            scheduled = task.task.get("scheduled_time")
            if scheduled:
                m.schedule_to_start.record(max(0.0, now_ms - scheduled) / 1000, attributes)
        return tasks

    return wrapper
