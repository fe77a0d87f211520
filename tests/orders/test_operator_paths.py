"""Staff, operators and time acting on orders: ship, release a hold, expiry, retry, concurrent cancels.

The saga is driven step by step in the test's own thread (the Celery transport
is captured), so each case sets up exactly the state it needs. Every case ends
with ``check_invariants``.
"""

import pytest
from django.core.cache import cache

from catalog.models import Reservation, StockLevel
from catalog.services import reservation_release
from orders.models import Order
from orders.saga import engine
from orders.services import OrderNotShippable, order_ship
from shipping.models import Shipment
from tests.api.conftest import client_for
from tests.factories import ProductFactory, StaffFactory, place_order

from .saga_helpers import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)  # the fake gateway refuses to run inside a transaction

STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    cache.clear()  # API throttles


@pytest.fixture
def product():
    return ProductFactory(on_hand=10)


def stock(product):
    level = StockLevel.objects.get(product=product)
    return level.on_hand, level.reserved


def advance(order, steps=STEPS):
    for name in steps:
        assert engine.run_forward(order.saga.pk, name, task_id="t") == engine.CONTINUE
    order.refresh_from_db()
    return order


def confirmed_order(product, quantity=2):
    order = advance(place_order(products=[product], quantity=quantity))
    assert order.status == "confirmed"
    return order


def staff_api():
    user = StaffFactory()
    user.user_permissions.add(*_perms("ship_order", "deliver_order"))
    return client_for(user)


def _perms(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename__in=codenames)


# --- shipping commits the stock or refuses ----------------------------------------------
def test_shipping_commits_the_held_stock(product):
    order = confirmed_order(product)

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 200 and response.json()["status"] == "shipped"
    assert stock(product) == (8, 0)
    assert Reservation.objects.get(order=order).status == "committed"
    assert_invariants()


def test_shipping_an_order_whose_hold_was_released_is_refused_with_409(product):
    order = confirmed_order(product)
    reservation_release(reservation=order.reservation)  # what the admin's release used to allow

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"].startswith("No stock is held for this order (its reservation is released)")
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert Shipment.objects.get(order=order).status == "created"
    assert stock(product) == (10, 0)
    assert_invariants()


def test_shipping_an_order_whose_reservation_is_gone_is_refused_with_409(product):
    order = confirmed_order(product)
    reservation_release(reservation=order.reservation)
    Reservation.objects.filter(order=order).delete()  # what the retention cleanup used to delete

    response = staff_api().post(f"/api/v1/orders/{order.public_id}/ship/")

    assert response.status_code == 409
    assert "(its reservation no longer exists)" in response.json()["error"]["message"]
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert_invariants()


def test_the_ship_service_says_why_it_refuses(product):
    order = place_order(products=[product])
    with pytest.raises(OrderNotShippable, match="only a confirmed order"):
        order_ship(order=order)
    assert Order.objects.get(pk=order.pk).status == "pending"
