"""Beat jobs and health probes (no worker: chains are captured)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Reservation, StockLevel
from notifications.models import Notification
from notifications.services import notification_queue
from orders.models import Order, SagaRun
from orders.saga import events as saga_events
from orders.tasks import expire_reservations
from tests.factories import ProductFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


def overdue(order):
    reservation = reserve_stock(order)
    Reservation.objects.filter(pk=reservation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return reservation


def test_an_overdue_hold_of_a_running_saga_compensates_it(sent, django_capture_on_commit_callbacks):
    product = ProductFactory(on_hand=5)
    order = place_order(products=[product])
    overdue(order)
    order.saga.steps.filter(name="reserve_inventory").update(status="succeeded", attempts=1)
    SagaRun.objects.filter(pk=order.saga.pk).update(status="running")
    Order.objects.filter(pk=order.pk).update(status="reserved")

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_reservations() == {"compensating": 1, "expired": 0, "skipped": 0}
    order.refresh_from_db()
    assert order.status == "compensating"
    assert order.cancel_reason == "We could not complete your order in time."
    assert sent[-1] == [
        "send_cancellation",
        "cancel_shipment",
        "refund_payment",
        "release_inventory",
    ]  # every step's, whatever the rows say


def test_an_overdue_hold_without_a_live_saga_just_expires():
    product = ProductFactory(on_hand=5)
    order = place_order(products=[product])
    reservation = overdue(order)
    SagaRun.objects.filter(pk=order.saga.pk).update(status="failed")

    assert expire_reservations() == {"compensating": 0, "expired": 1, "skipped": 0}
    reservation.refresh_from_db()
    assert reservation.status == "expired"
    assert StockLevel.objects.get(product=product).reserved == 0


def test_a_paid_order_keeps_its_stock():
    order = place_order()
    reservation = reserve_stock(order)
    Reservation.objects.filter(pk=reservation.pk).update(expires_at=None)
    assert expire_reservations() == {"compensating": 0, "expired": 0, "skipped": 0}


def test_queued_notifications_are_retried_by_beat(monkeypatch):
    from notifications import tasks

    stale = notification_queue(template="order_shipped", recipient="a@b.c", context={}, idempotency_key="old")
    notification_queue(template="order_shipped", recipient="a@b.c", context={}, idempotency_key="new")
    Notification.objects.filter(pk=stale.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    delayed = []
    monkeypatch.setattr(tasks.send_notification, "delay", lambda notification_id: delayed.append(notification_id))
    assert tasks.retry_queued_notifications() == 1
    assert delayed == [stale.pk]


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_reports_a_broker_that_is_down(client, settings):
    from config.celery import app

    original = app.conf.broker_url, app.conf.broker_write_url
    app.conf.broker_url = app.conf.broker_write_url = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url, app.conf.broker_write_url = original
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")
