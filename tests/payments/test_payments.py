from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from payments.gateways import FakeGateway, GatewayError, PaymentDeclined
from payments.models import FakeGatewayCharge, Payment
from payments.services import payment_charge, payment_refund
from tests.factories import ProductFactory, place_order

# The fake gateway plays an external system and refuses to run inside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def order_with(token, price="25.00"):
    return place_order(products=[ProductFactory(price=Decimal(price))], payment_token=token)


def test_charge_captures_the_order_total_once_per_key():
    order = order_with("tok_visa")
    first = payment_charge(order=order, idempotency_key="o1:pay")
    second = payment_charge(order=order, idempotency_key="o1:pay")

    assert first.pk == second.pk
    assert (first.status, first.amount, first.gateway) == ("captured", Decimal("25.00"), "fake")
    assert first.gateway_reference.startswith("ch_")
    assert FakeGatewayCharge.objects.get(idempotency_key="o1:pay").attempts == 2
    assert Payment.objects.count() == 1


def test_declined_card_records_a_failed_payment():
    order = order_with("tok_declined")
    with pytest.raises(PaymentDeclined):
        payment_charge(order=order, idempotency_key="o1:pay")
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")


def test_timeouts_record_nothing_and_flaky_succeeds_on_third_try():
    order = order_with("tok_flaky")
    for _ in range(2):
        with pytest.raises(GatewayError):
            payment_charge(order=order, idempotency_key="o1:pay")
    assert not Payment.objects.exists()
    assert payment_charge(order=order, idempotency_key="o1:pay").status == "captured"


def test_refund_finds_the_charge_at_the_gateway_even_if_we_never_recorded_it():
    order = order_with("tok_visa")
    FakeGateway().charge(idempotency_key="o1:pay", token="tok_visa", amount=order.total, currency="USD")

    refund = payment_refund(order=order, charge_key="o1:pay", reason="cancelled")
    again = payment_refund(order=order, charge_key="o1:pay", reason="cancelled")

    assert refund.pk == again.pk
    assert refund.amount == Decimal("25.00")
    assert Payment.objects.get().status == "refunded"


def test_refund_of_nothing_is_a_no_op():
    order = order_with("tok_visa")
    assert payment_refund(order=order, charge_key="never-charged") is None


def test_database_refuses_a_second_charge_for_one_order():
    order = order_with("tok_visa")
    payment_charge(order=order, idempotency_key="o1:pay")
    with pytest.raises(IntegrityError, match="payment_one_charge_per_order"), transaction.atomic():
        Payment.objects.create(order=order, amount=1, currency="USD", idempotency_key="other", status="captured")


def test_gateway_refuses_to_run_inside_a_transaction():
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        FakeGateway().charge(idempotency_key="k", token="tok_visa", amount=1, currency="USD")
