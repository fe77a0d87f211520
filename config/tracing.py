"""One trace per checkout: OpenTelemetry for Django, Celery and psycopg, on when ``OTEL_TRACING=true``.

The API request that places an order starts a trace; the saga's chain is published on commit
inside that request, so every step and compensation task (and their retries, and the chain's
next task, published by the worker inside the task's span) carries its ``traceparent`` in the
message headers and joins the same trace. Each SQL statement is a child span. Log lines show
the trace id next to the request id (:class:`TraceIDFilter`).

Where spans go is the SDK's standard configuration: ``OTEL_TRACES_EXPORTER`` (``otlp``, the
default, over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``console``; ``none``),
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``.

Every process instruments itself as it starts: the WSGI application (``config/wsgi.py``), Celery
workers and beat (``config/celery.py``, before a prefork worker forks: the SDK restarts its
export thread in each child).
"""

import logging
import os

from opentelemetry import trace

log = logging.getLogger(__name__)
_provider = None


def configure_tracing(tracer_provider=None):
    """Instrument Django, Celery and psycopg in this process (once); returns the tracer provider.

    Without ``tracer_provider``, one is built from the ``OTEL_*`` environment and made global.
    """
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    provider = tracer_provider or _provider_from_environment()
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _provider = provider
    return provider


def unconfigure_tracing():
    """Remove the instrumentation again (tests)."""
    global _provider
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), PsycopgInstrumentor()):
        instrumentor.uninstrument()
    _provider = None


def _provider_from_environment():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    os.environ.setdefault("OTEL_SERVICE_NAME", "fulfilment")
    provider = TracerProvider(resource=Resource.create())
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        raise ValueError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, not {exporter!r}")
    trace.set_tracer_provider(provider)
    return provider


def configure_tracing_if_enabled():
    from django.conf import settings

    if settings.OTEL_TRACING:
        configure_tracing()


class TraceIDFilter(logging.Filter):
    """``record.trace_id``: the current trace's id (32 hex digits), or "" outside a recorded trace."""

    def filter(self, record):
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        return True
