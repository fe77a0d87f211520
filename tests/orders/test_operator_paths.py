"""Staff, operators and time acting on orders: ship, release a hold, expiry, retry, concurrent cancels.

The saga is driven step by step in the test's own thread (the Celery transport
is captured), so each case sets up exactly the state it needs. Every case ends
with ``check_invariants``.
"""

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.urls import reverse

from catalog.models import Reservation, StockLevel
from catalog.services import HoldStillNeeded, reservation_release, reservation_release_by_staff, stock_reserve
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


# --- releasing a hold by hand ------------------------------------------------------------
@pytest.fixture
def support_client(client, django_user_model):
    user = django_user_model.objects.create_user("sam", "sam@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    client.force_login(user)
    return client


def release_in_admin(client, reservation):
    changelist = reverse("admin:catalog_reservation_changelist")
    response = client.post(changelist, {"action": "release", "_selected_action": [reservation.pk]}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_support_cannot_release_the_hold_of_a_confirmed_order_so_it_never_ships_without_stock(product, support_client):
    order = confirmed_order(product)

    messages = release_in_admin(support_client, order.reservation)

    assert messages == [
        f"Reservation {order.reservation.pk} was not released: order {order.public_id} is confirmed and still "
        "needs its stock. Cancel the order instead (its saga releases the stock and refunds the customer)."
    ]
    assert Reservation.objects.get(order=order).status == "active"
    assert stock(product) == (10, 2)
    assert staff_api().post(f"/api/v1/orders/{order.public_id}/ship/").status_code == 200
    assert stock(product) == (8, 0)
    assert_invariants()


@pytest.mark.parametrize("steps", [[], STEPS[:1], STEPS[:2]], ids=["pending", "reserved", "paid"])
def test_the_hold_of_an_order_still_in_its_saga_is_not_released_by_hand(product, support_client, steps):
    order = advance(place_order(products=[product]), steps)
    reservation = stock_reserve(order=order)

    [message] = release_in_admin(support_client, reservation)

    assert message.startswith(f"Reservation {reservation.pk} was not released")
    assert Reservation.objects.get(pk=reservation.pk).status == "active"
    with pytest.raises(HoldStillNeeded):
        reservation_release_by_staff(reservation=reservation)


def test_a_hold_left_behind_by_an_order_resolved_by_hand_can_be_released(product, support_client):
    order = place_order(products=[product])
    reservation = stock_reserve(order=order)
    Order.objects.filter(pk=order.pk).update(status="cancelled")  # resolved by an operator, stock not given back

    assert release_in_admin(support_client, reservation) == ["Released 1 reservation(s)."]
    assert Reservation.objects.get(pk=reservation.pk).status == "released"
    assert stock(product) == (10, 0)
