"""One trace per checkout: the API request and every step and compensation of its saga, through a real worker."""

import logging
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from config.tracing import TraceIDFilter, configure_tracing, unconfigure_tracing
from orders.models import Order
from tests.api.conftest import client_for
from tests.factories import ADDRESS, ProductFactory, UserFactory
from tests.orders.saga_helpers import wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]

FORWARD = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


@pytest.fixture(autouse=True)
def fake_email(settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"


@pytest.fixture
def exporter():
    """Django, Celery and psycopg instrumented in this process (the worker is a thread of it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_tracing(tracer_provider=provider)
    yield exporter
    unconfigure_tracing()


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.addFilter(TraceIDFilter())
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def saga_logs():
    handler = Records()
    logger = logging.getLogger("orders.saga")
    level = logger.level
    logger.setLevel(logging.INFO)  # a test worker started earlier in the session may have raised the root's
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def checkout(token):
    api = client_for(UserFactory())  # a new client: the tracing middleware is in its chain
    body = {"lines": [{"sku": "MOUSE-01", "quantity": 1}], "shipping_address": ADDRESS, "payment_token": token}
    response = api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"trace-{token}")
    assert response.status_code == 202, response.content
    return Order.objects.get(public_id=response.json()["id"]), response["X-Request-ID"]


def task_spans(exporter, trace_id):
    """{task name: [span, ...]} of the Celery spans run in a trace."""
    spans = {}
    for span in exporter.get_finished_spans():
        if span.kind == SpanKind.CONSUMER and span.context.trace_id == trace_id:
            spans.setdefault(span.attributes.get("celery.task_name", span.name), []).append(span)
    return spans


def request_span(exporter):
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.SERVER
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
    ]
    return span


def test_the_checkout_request_and_every_step_of_its_saga_share_one_trace(exporter, saga_logs):
    ProductFactory(sku="MOUSE-01", price=Decimal("29.99"))

    order, request_id = checkout("tok_visa")
    assert wait_for_saga(order).status == "completed"
    trace_id = request_span(exporter).context.trace_id
    wait_until(lambda: len(task_spans(exporter, trace_id)) == 4, message="the four step spans")

    tasks = task_spans(exporter, trace_id)
    assert sorted(tasks) == sorted(f"orders.saga.{name}" for name in FORWARD)
    assert all(len(spans) == 1 for spans in tasks.values())
    # The SQL of the steps is in the same trace, below the step spans.
    step_span_ids = {spans[0].context.span_id for spans in tasks.values()}
    sql = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id and s.kind == SpanKind.CLIENT]
    assert any(s.parent is not None and s.parent.span_id in step_span_ids for s in sql)
    # The step log lines carry the trace id next to the request id.
    step_lines = [r for r in saga_logs if getattr(r, "order_id", None) == str(order.public_id)]
    assert len(step_lines) >= 8
    assert {(r.request_id, r.trace_id) for r in step_lines} == {(request_id, format(trace_id, "032x"))}


def test_the_compensations_of_a_failed_checkout_join_its_trace(exporter):
    ProductFactory(sku="MOUSE-01", price=Decimal("29.99"))

    order, _ = checkout("tok_declined")
    assert wait_for_saga(order).status == "compensated"
    trace_id = request_span(exporter).context.trace_id
    expected = {"orders.saga.reserve_inventory", "orders.saga.process_payment", "orders.saga.release_inventory"}
    wait_until(lambda: expected <= set(task_spans(exporter, trace_id)), message="the compensation spans")

    traced = set(task_spans(exporter, trace_id))
    assert expected <= traced
    assert "orders.saga.create_shipment" not in traced
    # Nothing of this saga ran outside the request's trace.
    others = {
        s.attributes.get("celery.task_name")
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.CONSUMER and s.context.trace_id != trace_id
    }
    assert not {name for name in others if name and name.startswith("orders.saga.")}
