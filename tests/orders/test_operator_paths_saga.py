"""Operators and time acting on a saga, with a real Celery worker: retention, retries of expired holds.

Each scenario ends with ``check_invariants``.
"""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command

from catalog.models import StockLevel
from payments.models import Payment
from tests.api.conftest import client_for
from tests.factories import ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga

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
