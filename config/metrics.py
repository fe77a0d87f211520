"""Prometheus metrics, multiprocess-safe (web workers and Celery workers alike).

Every process writes its samples under ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics``
aggregates them and adds what is read at scrape time (sagas in progress from
the database, queue depth from the broker).
"""

import hmac
import os
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

# A metric without labels writes its first sample file as it is created, so the directory must
# exist before any process (a worker, a command, a type checker setting Django up) imports this.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

SAGAS = Counter("fulfilment_sagas_total", "Sagas by outcome.", ["event"])
SAGA_DURATION = Histogram(
    "fulfilment_saga_duration_seconds",
    "From order placed to saga completed or compensated.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
STEP_FAILURES = Counter("fulfilment_step_failures_total", "Saga steps that failed for good.", ["step"])
HTTP_REQUESTS = Counter("fulfilment_http_requests_total", "HTTP requests.", ["method", "route", "status"])
HTTP_DURATION = Histogram("fulfilment_http_request_duration_seconds", "HTTP request duration.", ["method", "route"])

# Any word a client sends becomes request.method; as a label value each one would be a
# new time series. Methods outside this set are counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def http_method_label(method):
    return method if method in HTTP_METHODS else "other"


class LiveCollector:
    """Read at scrape time: sagas in progress by status, and the broker's queue depth."""

    def collect(self):
        from django.conf import settings
        from django.db.models import Count

        from orders.models import ACTIVE_SAGA_STATUSES, SagaRun

        in_progress = GaugeMetricFamily(
            "fulfilment_sagas_in_progress", "Sagas not finished, by status.", labels=["status"]
        )
        counts = dict(
            SagaRun.objects.filter(status__in=ACTIVE_SAGA_STATUSES)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        for status in ACTIVE_SAGA_STATUSES:
            in_progress.add_metric([status], counts.get(status, 0))
        yield in_progress
        depth = GaugeMetricFamily("fulfilment_queue_depth", "Messages waiting in the Celery queue.", labels=["queue"])
        if settings.CELERY_BROKER_URL.startswith("redis"):
            try:
                import redis

                depth.add_metric(["celery"], redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("celery"))
            except Exception:  # the broker is down: report what we can
                pass
        yield depth


def authorized(request):
    """No METRICS_TOKEN: open (keep /metrics on an internal network). Otherwise ``Authorization: Bearer <token>``."""
    expected = settings.METRICS_TOKEN
    if not expected:
        return True
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), expected.encode())


def metrics_view(request):
    if not authorized(request):
        response = HttpResponse("Unauthorized: send Authorization: Bearer <METRICS_TOKEN>.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    live = CollectorRegistry()
    live.register(LiveCollector())
    body = generate_latest(registry) + generate_latest(live)
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")


def connect():
    from orders import signals

    def started(sender, **kwargs):
        SAGAS.labels("started").inc()

    def ended(event):
        def receiver(sender, saga, order, **kwargs):
            SAGAS.labels(event).inc()
            if saga.finished_at:
                SAGA_DURATION.observe(max(0.0, (saga.finished_at - order.created_at).total_seconds()))

        return receiver

    def failed_step(sender, step=None, **kwargs):
        if step:
            STEP_FAILURES.labels(step).inc()

    signals.saga_started.connect(started, dispatch_uid="metrics.saga_started", weak=False)
    for event in ("completed", "compensated", "failed"):
        getattr(signals, f"saga_{event}").connect(ended(event), dispatch_uid=f"metrics.saga_{event}", weak=False)
    signals.step_failed.connect(failed_step, dispatch_uid="metrics.step_failed", weak=False)
