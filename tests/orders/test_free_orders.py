"""Zero-total orders (free samples): the saga skips the charge and finishes (real worker)."""

from decimal import Decimal

import pytest

from catalog.models import StockLevel
from orders.services import order_cancel, order_ship
from payments.models import FakeGatewayCharge, Payment, Refund
from tests.factories import ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    return mailoutbox


@pytest.fixture
def sample():
    return ProductFactory(sku="SAMPLE", price=Decimal("0.00"), on_hand=10)


def test_a_zero_total_order_is_confirmed_without_a_charge(sample, mailoutbox):
    order = place_order(products=[sample], quantity=2)

    saga = wait_for_saga(order)

    assert saga.status == "completed"
    order.refresh_from_db()
    assert (order.status, order.total) == ("confirmed", Decimal("0.00"))
    payment_step = saga.steps.get(name="process_payment")
    assert (payment_step.status, payment_step.attempts) == ("succeeded", 1)
    assert payment_step.result == {"charged": False, "amount": "0.00", "payment_id": None}
    assert not Payment.objects.filter(order=order).exists()
    assert not FakeGatewayCharge.objects.exists()  # the gateway was never asked
    assert order.reservation.expires_at is None  # nothing to pay: the stock is kept like a paid order's
    assert [m.subject.split("…")[1].strip() for m in mailoutbox] == ["is confirmed"]
    assert_invariants()

    order_ship(order=order)
    assert StockLevel.objects.get(product=sample).on_hand == 8
    assert_invariants()


def test_cancelling_a_zero_total_order_refunds_nothing_and_leaves_no_violation(sample):
    order = place_order(products=[sample], quantity=3)
    wait_for_saga(order)

    order_cancel(order=order)
    saga = wait_for_saga(order, {"compensated", "failed"})

    assert saga.status == "compensated"
    refund = saga.steps.get(kind="compensation", name="refund_payment")
    assert (refund.status, refund.result) == ("succeeded", {"charged": False, "refund_id": None})
    assert not Refund.objects.exists() and not FakeGatewayCharge.objects.exists()
    level = StockLevel.objects.get(product=sample)
    assert (level.on_hand, level.reserved) == (10, 0)
    assert_invariants()


def test_a_free_sample_with_a_paid_product_charges_only_the_paid_total(sample):
    order = place_order(products=[sample, ProductFactory(price=Decimal("12.50"))])

    assert wait_for_saga(order).status == "completed"

    payment = Payment.objects.get(order=order)
    assert (payment.status, payment.amount) == ("captured", Decimal("12.50"))
    assert_invariants()
