"""Adapters close a key when asked to undo it, and check_invariants reads their books.

The same contract for the bundled fakes (books in PostgreSQL) and the Redis ones
(``tests/fakes.py``, books outside PostgreSQL).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from notifications.models import Notification
from orders.invariants import (
    cancelled_orders_are_settled_in_the_outside_world,
    cancelled_orders_were_told_last,
)
from orders.models import Order
from orders.saga import events as saga_events
from payments.gateways import FakeGateway, GatewayError, PaymentDeclined
from shipping.carriers import BookingCancelled, CarrierUnavailable, FakeCarrier
from shipping.services import shipment_cancel
from tests import fakes
from tests.factories import ADDRESS, ProductFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)  # the adapters refuse to run inside a transaction


@pytest.fixture(autouse=True)
def no_transport(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)


@pytest.fixture(autouse=True)
def redis_books():
    fakes.redis_books_clear()
    yield
    fakes.redis_books_clear()


def charge(gateway, key="o1:process_payment", token="tok_visa"):
    return gateway.charge(idempotency_key=key, token=token, amount=Decimal("25.00"), currency="USD")


GATEWAYS = [FakeGateway, fakes.RedisGateway]
CARRIERS = [FakeCarrier, fakes.RedisCarrier]


@pytest.mark.parametrize("gateway_class", GATEWAYS)
def test_a_void_before_the_charge_makes_the_gateway_decline_it(gateway_class):
    gateway = gateway_class()
    assert gateway.void(idempotency_key="o1:process_payment") is None
    with pytest.raises(PaymentDeclined, match="charge_voided"):
        charge(gateway)
    assert gateway.find_charge(idempotency_key="o1:process_payment") is None
    assert gateway.void(idempotency_key="o1:process_payment") is None  # idempotent
    assert gateway.books() == []


@pytest.mark.parametrize("gateway_class", GATEWAYS)
def test_a_void_after_the_charge_returns_it_and_changes_nothing(gateway_class):
    gateway = gateway_class()
    made = charge(gateway)
    assert gateway.void(idempotency_key="o1:process_payment") == made
    assert charge(gateway) == made  # a replay still answers as the first time
    assert gateway.books() == [("o1:process_payment", "charge")]


def test_a_void_between_two_attempts_of_a_flaky_charge_declines_the_next_one():
    gateway = FakeGateway()
    with pytest.raises(GatewayError):
        charge(gateway, token="tok_flaky")
    assert gateway.void(idempotency_key="o1:process_payment") is None
    for _ in range(3):
        with pytest.raises(PaymentDeclined, match="charge_voided"):
            charge(gateway, token="tok_flaky")
    assert gateway.books() == []


def book(carrier, key="o1:create_shipment", address=ADDRESS):
    return carrier.book(idempotency_key=key, address=address, parcels=[])


@pytest.mark.parametrize("carrier_class", CARRIERS)
def test_a_cancel_before_the_booking_makes_the_carrier_refuse_it(carrier_class):
    carrier = carrier_class()
    carrier.cancel(idempotency_key="o1:create_shipment")
    with pytest.raises(BookingCancelled):
        book(carrier)
    assert carrier.books() == []


@pytest.mark.parametrize("carrier_class", CARRIERS)
def test_a_cancel_after_the_booking_cancels_it_for_good(carrier_class):
    carrier = carrier_class()
    assert book(carrier) == book(carrier)
    assert carrier.books() == [("o1:create_shipment", False)]
    carrier.cancel(idempotency_key="o1:create_shipment")
    carrier.cancel(idempotency_key="o1:create_shipment")
    assert carrier.books() == [("o1:create_shipment", True)]
    with pytest.raises(BookingCancelled):
        book(carrier)


def test_a_cancel_between_two_attempts_of_a_flaky_booking_refuses_the_next_one():
    carrier = FakeCarrier()
    with pytest.raises(CarrierUnavailable):
        book(carrier, address=ADDRESS | {"city": "Flakyville"})
    carrier.cancel(idempotency_key="o1:create_shipment")
    for _ in range(3):
        with pytest.raises(BookingCancelled):
            book(carrier, address=ADDRESS | {"city": "Flakyville"})
    assert carrier.books() == []


def test_shipment_cancel_cancels_a_booking_we_never_recorded():
    order = place_order()
    key = f"{order.public_id}:create_shipment"
    book(FakeCarrier(), key=key)  # the carrier booked; the answer never reached our rows

    assert shipment_cancel(order=order, idempotency_key=key) is None  # no shipment of ours to cancel
    assert FakeCarrier().books() == [(key, True)]


def cancelled_order():
    order = place_order(products=[ProductFactory(price=Decimal("25.00"))])
    Order.objects.filter(pk=order.pk).update(status="cancelled")
    return order


@pytest.mark.parametrize("carrier", ["shipping.carriers.FakeCarrier", "tests.fakes.RedisCarrier"])
def test_invariants_find_a_live_booking_of_a_cancelled_order_in_the_carriers_books(settings, carrier):
    settings.SHIPPING_CARRIER = carrier
    order, live = cancelled_order(), place_order()
    key = f"{order.public_id}:create_shipment"
    book(fakes.RedisCarrier() if "Redis" in carrier else FakeCarrier(), key=key)
    book(fakes.RedisCarrier() if "Redis" in carrier else FakeCarrier(), key=f"{live.public_id}:create_shipment")

    assert cancelled_orders_are_settled_in_the_outside_world() == [
        f"order {order.public_id}: cancelled but the carrier booking {key} is still live"
    ]
    shipment_cancel(order=order, idempotency_key=key)
    assert cancelled_orders_are_settled_in_the_outside_world() == []


@pytest.mark.parametrize("gateway", ["payments.gateways.FakeGateway", "tests.fakes.RedisGateway"])
def test_invariants_find_an_unrefunded_charge_of_a_cancelled_order_in_the_gateways_books(settings, gateway):
    from payments.services import payment_refund

    settings.PAYMENT_GATEWAY = gateway
    order = cancelled_order()
    key = f"{order.public_id}:process_payment"
    charge(fakes.RedisGateway() if "Redis" in gateway else FakeGateway(), key=key)

    assert cancelled_orders_are_settled_in_the_outside_world() == [
        f"order {order.public_id}: cancelled but the gateway charge {key} was never refunded"
    ]
    payment_refund(order=order, charge_key=key)
    assert cancelled_orders_are_settled_in_the_outside_world() == []


def email(order, template, status, sent_at=None):
    return Notification.objects.create(
        order=order,
        template=template,
        recipient="ada@example.com",
        idempotency_key=f"{order.public_id}:{template}",
        status=status,
        sent_at=sent_at,
    )


def test_invariants_find_a_confirmation_a_cancelled_order_sent_without_a_cancellation_after_it():
    now = timezone.now()
    untold, told_before, told_after, queued, never_confirmed = (cancelled_order() for _ in range(5))
    for order in (untold, told_before, told_after, queued):
        email(order, "order_confirmed", "sent", now)
    email(told_before, "order_cancelled", "sent", now - timedelta(seconds=1))
    email(told_after, "order_cancelled", "sent", now + timedelta(seconds=1))
    email(queued, "order_cancelled", "queued")
    email(never_confirmed, "order_confirmed", "failed")

    message = "order {}: cancelled, but its confirmation was sent and no cancellation notice after it"
    assert sorted(cancelled_orders_were_told_last()) == sorted(
        message.format(order.public_id) for order in (untold, told_before)
    )
