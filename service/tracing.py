"""OpenTelemetry tracing, with --otel and the `otel` extra (opentelemetry-sdk): a SERVER span per request
(HTTP and gRPC), with `decode`, `queue`, `compute` and `encode` as its children, and the trace id as the
request id (X-Request-ID) unless the client sent its own (then kept, and noted on the span as request.id). W3C `traceparent` from the client is honoured. Spans go where the standard
OpenTelemetry variables say (OTEL_TRACES_EXPORTER: otlp, the default, needs
opentelemetry-exporter-otlp-proto-http; console prints them; none drops them).

Without --otel the SDK is not imported, no middleware is installed and no tracer exists: the request path
only tests `tracer is None`.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass
class RequestTimes:
    """One request's stages on the monotonic clock (ns), filled by the dataplane and the batcher."""

    decode: tuple[int, int] | None = None
    queued: int = 0  # its rows joined the queue
    batch: tuple[int, int] | None = None  # from the start of its first batch to the end of its last
    batch_rows: int = 0
    encode: tuple[int, int] | None = None


class TracingUnavailable(RuntimeError):
    """--otel was asked for and what it needs is not installed."""


class Tracer:
    """The service's use of an OpenTelemetry tracer."""

    def __init__(self, service_name: str = "ortserve", version: str = ""):
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            if exporter == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                f"--otel needs {exc.name}: install the otel extra (pip install 'ortserve[otel]'), or set "
                "OTEL_TRACES_EXPORTER=console or none to do without the OTLP exporter"
            ) from None

        provider = TracerProvider(resource=Resource.create({"service.name": service_name, "service.version": version}))
        if exporter == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=_one_line)))
        elif exporter == "otlp":
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.provider = provider
        self.tracer = provider.get_tracer("ortserve", version)
        self.propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)

    @contextmanager
    def server_span(self, name: str, carrier: dict[str, str]) -> Iterator[Any]:
        """A SERVER span for one request, continuing the client's trace when it sent a traceparent."""
        context = self.propagator.extract(carrier)
        with self.tracer.start_as_current_span(name, context=context, kind=self._server) as span:
            yield span

    def note_request_id(self, request_id: str) -> None:
        """The client's own X-Request-ID on the request's span (then the request id is not the trace id)."""
        self._trace.get_current_span().set_attribute("request.id", request_id)

    def current_trace_id(self) -> str | None:
        context = self._trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def fail(self, span, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._error)

    def stages(self, times: RequestTimes, model: str, version: str) -> None:
        """The request's stages as child spans of the current one (their times are when they happened)."""
        offset = time.time_ns() - time.monotonic_ns()
        attributes = {"model": model, "model.version": version}
        for name, span_times, extra in (
            ("decode", times.decode, {}),
            ("queue", (times.queued, times.batch[0]) if times.batch and times.queued else None, {}),
            ("compute", times.batch, {"batch.rows": times.batch_rows}),
            ("encode", times.encode, {}),
        ):
            if span_times is None:
                continue
            start, end = span_times
            span = self.tracer.start_span(name, start_time=start + offset, attributes={**attributes, **extra})
            span.end(end_time=end + offset)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _one_line(span) -> str:
    return span.to_json(indent=None) + "\n"


class TracingMiddleware:
    """ASGI: a SERVER span around each HTTP request, named by its route once routing has found it."""

    def __init__(self, app, tracer: Tracer):
        self.app, self.tracer = app, tracer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in (b"traceparent", b"tracestate")}
        status = {"code": 0}

        async def observe(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with self.tracer.server_span(f"{scope['method']} {scope['path']}", carrier) as span:
            try:
                await self.app(scope, receive, observe)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.request.method", scope["method"])
                self.tracer.fail(span, status["code"] or 499)
