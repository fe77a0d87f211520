"""Mark resolved: an operator closes a failed saga by hand, and the order's books must agree.

Found by the lifecycle property test: a saga whose refund kept failing was marked resolved, and
the order ended cancelled with its payment captured and its stock still held.
"""

from decimal import Decimal

import pytest
from django.db import transaction

from catalog.models import StockLevel
from orders.models import Order
from orders.saga import engine
from orders.saga import events as saga_events
from orders.saga.recovery import SagaActionError, saga_resolve
from payments.gateways import get_gateway
from payments.models import Payment
from shipping.carriers import get_carrier
from tests.factories import ADDRESS, ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


def stock(product):
    level = StockLevel.objects.get(product=product)
    return level.on_hand, level.reserved


def test_a_saga_whose_refund_failed_cannot_be_marked_resolved_while_the_payment_is_captured():
    product = ProductFactory(on_hand=10)
    order = place_order(
        products=[product], payment_token="tok_refund_fails", address=ADDRESS | {"postal_code": "00000"}
    )
    saga = wait_for_saga(order)
    assert saga.status == "failed"

    with pytest.raises(SagaActionError, match="not refunded"):
        saga_resolve(saga.pk, note="refunded in the gateway's dashboard")

    saga.refresh_from_db()
    assert saga.status == "failed"
    assert Order.objects.get(pk=order.pk).status == "needs_attention"
    assert Payment.objects.get(order=order).status == "captured"
    assert_invariants()


def test_marking_resolved_gives_back_the_stock_the_order_still_held(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)  # the steps run here, one by one
    product = ProductFactory(on_hand=10)
    order = place_order(products=[product], quantity=2)
    assert engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t") == engine.CONTINUE
    with transaction.atomic():  # the payment step crash-looped past SAGA_STEP_MAX_DELIVERIES: nothing charged
        saga = engine.lock_saga(order.saga.pk)
        engine.fail(saga, saga.steps.get(name="process_payment"), "process_payment was delivered 11 times")
    assert stock(product) == (10, 2)

    assert saga_resolve(order.saga.pk, note="the customer was told by phone") == "resolved"

    assert Order.objects.get(pk=order.pk).status == "cancelled"
    assert stock(product) == (10, 0)
    assert_invariants()


def _failed_at(order, step, *, after):
    """Run the steps ``after`` here, then fail the saga at ``step`` as a crash-looping step would."""
    for name in after:
        assert engine.run_forward(order.saga.pk, name, task_id="t") == engine.CONTINUE
    with transaction.atomic():
        saga = engine.lock_saga(order.saga.pk)
        engine.fail(saga, saga.steps.get(name=step), f"{step} was delivered 11 times")


def test_a_charge_the_gateway_took_but_we_never_recorded_blocks_the_resolution(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[ProductFactory(on_hand=10)])
    # The gateway took the money; its answer was lost (no Payment row of ours), then the step crash-looped.
    key = engine.step_key(order, "process_payment")
    get_gateway().charge(idempotency_key=key, token="tok_visa", amount=order.total, currency=order.currency)
    _failed_at(order, "process_payment", after=["reserve_inventory"])

    with pytest.raises(SagaActionError, match="not refunded"):
        saga_resolve(order.saga.pk, note="nothing was charged, I think")

    assert Order.objects.get(pk=order.pk).status == "needs_attention"
    assert_invariants()


def test_resolving_cancels_a_parcel_the_carrier_booked_but_we_never_recorded(monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[ProductFactory(on_hand=10, price=Decimal("0.00"))])  # nothing to charge
    key = engine.step_key(order, "create_shipment")
    _failed_at(order, "create_shipment", after=["reserve_inventory", "process_payment"])
    get_carrier().book(idempotency_key=key, address=order.shipping_address, parcels=[])  # its answer lost

    assert saga_resolve(order.saga.pk, note="the customer withdrew by phone") == "resolved"

    assert Order.objects.get(pk=order.pk).status == "cancelled"
    assert (key, True) in get_carrier().books()
    assert_invariants()
