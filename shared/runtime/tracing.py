"""OpenTelemetry tracing across processes.

A job's trace starts at the API request that submitted it (or at the client's own
`traceparent`), is stored with the job, continues in the worker that runs it, and reaches
the webhook receiver as a W3C `traceparent` header. Spans are exported over OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; otherwise they are still
created, so trace ids propagate, but go nowhere.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("crewq")


def exporting() -> bool:
    """Whether spans are sent anywhere: an OTLP endpoint is configured."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_tracing(role: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": f"crewq-{role}"}))
    if exporting():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, if there is one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span_from(traceparent: str | None, name: str, **attributes: str) -> Iterator[trace.Span]:
    """A span continuing the trace `traceparent` names (a new trace when None)."""
    carrier: Mapping[str, str] = {"traceparent": traceparent} if traceparent else {}
    context = _propagator.extract(carrier)
    with tracer.start_as_current_span(name, context=context, attributes=attributes) as span:
        yield span
