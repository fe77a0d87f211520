"""One request id follows an order through the API, the saga tasks and the audit trail; /metrics counts sagas."""

import json
import logging

import pytest
from django.test import Client

from audit.models import AuditEvent
from config.logs import JSONFormatter
from config.observability import RequestIDFilter, set_request_id
from tests.api.conftest import client_for
from tests.factories import ADDRESS, ProductFactory, UserFactory

from .saga_helpers import wait_for_saga

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


@pytest.fixture(autouse=True)
def fake_email(settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"


def place(api, request_id=None, token="tok_visa"):
    headers = {"HTTP_IDEMPOTENCY_KEY": f"k-{token}-{request_id}"}
    if request_id:
        headers["HTTP_X_REQUEST_ID"] = request_id
    body = {"lines": [{"sku": "MOUSE-01", "quantity": 1}], "shipping_address": ADDRESS, "payment_token": token}
    return api.post("/api/v1/orders/", body, format="json", **headers)


def test_the_request_id_follows_the_order_through_tasks_and_audit():
    ProductFactory(sku="MOUSE-01")
    api = client_for(UserFactory())
    response = place(api, "req-checkout-42")
    assert response["X-Request-ID"] == "req-checkout-42"
    from orders.models import Order

    order = Order.objects.get(public_id=response.json()["id"])
    assert order.request_id == "req-checkout-42"
    assert wait_for_saga(order).status == "completed"

    events = AuditEvent.objects.filter(order_id=order.public_id)
    assert {"mark_reserved", "mark_paid", "mark_shipment_created", "confirm"} <= set(
        events.values_list("event", flat=True)
    )
    assert set(events.values_list("request_id", flat=True)) == {"req-checkout-42"}


def test_a_missing_or_malformed_request_id_is_replaced():
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")
    generated = response["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32


def test_metrics_count_sagas_after_they_run():
    ProductFactory(sku="MOUSE-01")
    api = client_for(UserFactory())
    from orders.models import Order

    ok = Order.objects.get(public_id=place(api, "m1").json()["id"])
    declined = Order.objects.get(public_id=place(api, "m2", token="tok_declined").json()["id"])
    wait_for_saga(ok)
    wait_for_saga(declined)

    body = Client().get("/metrics").content.decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line and line[0] != "#"
    }
    assert samples['fulfilment_sagas_total{event="started"}'] >= 2
    assert samples['fulfilment_sagas_total{event="completed"}'] >= 1
    assert samples['fulfilment_sagas_total{event="compensated"}'] >= 1
    assert samples['fulfilment_step_failures_total{step="process_payment"}'] >= 1
    assert samples["fulfilment_saga_duration_seconds_count"] >= 2
    assert 'fulfilment_sagas_in_progress{status="running"}' in samples
    assert "fulfilment_queue_depth" in body
    assert any(key.startswith("fulfilment_http_requests_total") for key in samples)


def test_json_log_lines_carry_the_request_id_and_extra_fields():
    record = logging.LogRecord("orders.saga", logging.INFO, __file__, 1, "step start %s", ("x",), None)
    record.step = "process_payment"
    token = set_request_id("req-7")
    try:
        RequestIDFilter().filter(record)
    finally:
        set_request_id("")
        del token
    line = json.loads(JSONFormatter().format(record))
    assert line["request_id"] == "req-7" and line["step"] == "process_payment" and line["message"] == "step start x"
