"""Operators and time acting on a saga, with a real Celery worker: retention, retries of expired holds.

Each scenario ends with ``check_invariants``.
"""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from catalog.models import Reservation, StockLevel
from orders.models import SagaRun
from orders.saga import events as saga_events
from orders.saga.recovery import expire_reservations, redrive_idle_sagas, saga_retry
from orders.services import order_ship
from orders.tasks import STEP_TASKS
from payments.models import Payment
from tests.api.conftest import client_for
from tests.factories import ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    return mailoutbox


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def product():
    return ProductFactory(sku="MOUSE", price=Decimal("29.99"), on_hand=10)


def stock(product):
    level = StockLevel.objects.get(product=product)
    return level.on_hand, level.reserved


def test_a_confirmed_order_cancelled_after_the_retention_cleanup_is_fully_undone(product):
    order = place_order(products=[product], quantity=2)
    assert wait_for_saga(order).status == "completed"

    call_command("cleanup", "--older-than", "0h", stdout=StringIO())
    response = client_for(order.customer).post(f"/api/v1/orders/{order.public_id}/cancel/")

    assert response.status_code == 202
    assert wait_for_saga(order).status == "compensated"
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert Payment.objects.get(order=order).status == "refunded"
    assert order.reservation.status == "released"
    assert stock(product) == (10, 0)
    assert_invariants()


def failed_at_payment_with_its_hold_expired(order, monkeypatch, settings):
    """The worker reserved the stock; the payment step then kept killing its worker; meanwhile the hold expired."""
    saga = SagaRun.objects.get(order=order)
    STEP_TASKS["reserve_inventory"].delay(saga.pk)  # this one step only: the chain was lost after it
    wait_until(lambda: saga.steps.get(name="reserve_inventory").status == "succeeded")
    settings.SAGA_STEP_MAX_DELIVERIES = 3
    saga.steps.filter(name="process_payment").update(
        status="running", deliveries=3, attempts=3, task_id="killed", started_at=timezone.now() - timedelta(hours=1)
    )
    assert redrive_idle_sagas(idle_seconds=0) == {"redriven from process_payment": 1}
    assert wait_for_saga(order).status == "failed"
    settings.SAGA_STEP_MAX_DELIVERIES = 10
    Reservation.objects.filter(order=order).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert expire_reservations() == {"compensating": 0, "expired": 1, "skipped": 0}
    assert_invariants()
    return saga


def test_a_failed_saga_whose_hold_expired_holds_the_stock_again_when_retried(product, monkeypatch, settings):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product], quantity=3)
    monkeypatch.undo()
    saga = failed_at_payment_with_its_hold_expired(order, monkeypatch, settings)
    assert stock(product) == (10, 0)

    assert saga_retry(saga.pk) == "retrying from process_payment"

    assert wait_for_saga(order).status == "completed"
    reservation = Reservation.objects.get(order=order)
    assert (reservation.status, reservation.expires_at) == ("active", None)
    assert stock(product) == (10, 3)
    assert_invariants()
    order_ship(order=order)
    assert stock(product) == (7, 0)
    assert_invariants()


def test_a_failed_saga_whose_stock_was_sold_meanwhile_is_compensated_when_retried(product, monkeypatch, settings):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product], quantity=3)
    monkeypatch.undo()
    saga = failed_at_payment_with_its_hold_expired(order, monkeypatch, settings)
    other = place_order(products=[product], quantity=8)
    assert wait_for_saga(other).status == "completed"

    assert saga_retry(saga.pk) == "compensating: the stock is no longer available"

    assert wait_for_saga(order, {"compensated", "failed"}).status == "compensated"
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert stock(product) == (10, 8)
    assert_invariants()


def test_support_cannot_release_a_confirmed_orders_hold_and_shipping_commits_the_stock(product, client):
    order = place_order(products=[product], quantity=2)
    assert wait_for_saga(order).status == "completed"
    support = get_user_model().objects.create_user("sam", "sam@example.com", "pw", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    client.force_login(support)

    client.post(
        reverse("admin:catalog_reservation_changelist"),
        {"action": "release", "_selected_action": [order.reservation.pk]},
    )
    assert Reservation.objects.get(order=order).status == "active"

    order_ship(order=order)
    assert Reservation.objects.get(order=order).status == "committed"
    assert stock(product) == (8, 0)
    assert_invariants()
