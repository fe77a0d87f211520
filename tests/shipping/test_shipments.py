import pytest
from django.db import IntegrityError, transaction
from django_fsm import TransitionNotAllowed

from catalog.models import StockLevel
from orders.services import order_deliver, order_ship
from shipping.carriers import AddressRejected, CarrierUnavailable
from shipping.models import FakeCarrierBooking, Shipment
from shipping.services import shipment_cancel, shipment_create
from tests.factories import ADDRESS, ProductFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db(transaction=True)


def confirmed_order(product, quantity=2):
    """An order pushed through the saga's states by hand."""
    order = place_order(products=[product], quantity=quantity)
    reserve_stock(order)
    shipment_create(order=order, idempotency_key=f"{order.public_id}:ship")
    for step in (order.mark_reserved, order.mark_paid, order.mark_shipment_created, order.confirm):
        step()
    order.save()
    return order


def test_booking_is_idempotent_per_key():
    order = place_order()
    first = shipment_create(order=order, idempotency_key="k")
    second = shipment_create(order=order, idempotency_key="k")
    assert first.pk == second.pk
    assert first.tracking_number.startswith("FK")
    assert FakeCarrierBooking.objects.count() == 1


def test_rejected_address_and_unavailable_carrier():
    with pytest.raises(AddressRejected):
        shipment_create(order=place_order(address=ADDRESS | {"postal_code": "00000"}), idempotency_key="a")
    with pytest.raises(CarrierUnavailable):
        shipment_create(order=place_order(address=ADDRESS | {"city": "Nowhere"}), idempotency_key="b")
    assert not Shipment.objects.exists()


def test_cancel_before_dispatch_cancels_and_after_dispatch_requests_a_return():
    product = ProductFactory(on_hand=10)
    order = confirmed_order(product)
    assert shipment_cancel(order=order).status == "cancelled"
    assert shipment_cancel(order=order) is None  # nothing live left
    assert FakeCarrierBooking.objects.get().cancelled

    shipped = confirmed_order(product)
    order_ship(order=shipped)
    assert shipment_cancel(order=shipped).status == "return_requested"


def test_shipping_commits_the_stock_and_delivery_completes_the_order():
    product = ProductFactory(on_hand=10)
    order = confirmed_order(product, quantity=3)

    order_ship(order=order)
    order.refresh_from_db()
    level = StockLevel.objects.get(product=product)
    assert (order.status, level.on_hand, level.reserved) == ("shipped", 7, 0)
    assert order.reservation.status == "committed"
    assert order.shipments.get().status == "dispatched"

    order_deliver(order=order)
    order.refresh_from_db()
    assert (order.status, order.shipments.get().status) == ("delivered", "delivered")


def test_shipping_an_unconfirmed_order_is_refused_and_changes_nothing():
    product = ProductFactory(on_hand=10)
    order = place_order(products=[product])
    reserve_stock(order)
    with pytest.raises(TransitionNotAllowed):
        order_ship(order=order)
    order.refresh_from_db()
    assert order.status == "pending"
    assert StockLevel.objects.get(product=product).on_hand == 10


def test_one_live_shipment_per_order():
    order = place_order()
    shipment_create(order=order, idempotency_key="k")
    with pytest.raises(IntegrityError, match="shipment_one_live_per_order"), transaction.atomic():
        Shipment.objects.create(order=order, carrier="fake", idempotency_key="k2")
