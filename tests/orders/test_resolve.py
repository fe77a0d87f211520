"""Mark resolved: an operator closes a failed saga by hand, and the order's books must agree.

Found by the lifecycle property test: a saga whose refund kept failing was marked resolved, and
the order ended cancelled with its payment captured and its stock still held.
"""

import pytest
from django.db import transaction

from catalog.models import StockLevel
from orders.models import Order
from orders.saga import engine
from orders.saga.recovery import SagaActionError, saga_resolve
from payments.models import Payment
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

    with pytest.raises(SagaActionError, match="still captured"):
        saga_resolve(saga.pk, note="refunded in the gateway's dashboard")

    saga.refresh_from_db()
    assert saga.status == "failed"
    assert Order.objects.get(pk=order.pk).status == "needs_attention"
    assert Payment.objects.get(order=order).status == "captured"
    assert_invariants()


def test_marking_resolved_gives_back_the_stock_the_order_still_held(monkeypatch):
    monkeypatch.setattr(engine, "dispatch", lambda saga_id, names: None)  # the steps run here, one by one
    product = ProductFactory(on_hand=10)
    order = place_order(products=[product], quantity=2)
    assert engine.run_forward(order.saga.pk, "reserve_inventory", task_id="t") == engine.CONTINUE
    with transaction.atomic():  # the payment step crash-looped past SAGA_STEP_MAX_DELIVERIES: nothing charged
        saga = engine._lock(order.saga.pk)
        engine.fail(saga, saga.steps.get(name="process_payment"), "process_payment was delivered 11 times")
    assert stock(product) == (10, 2)

    assert saga_resolve(order.saga.pk, note="the customer was told by phone") == "resolved"

    assert Order.objects.get(pk=order.pk).status == "cancelled"
    assert stock(product) == (10, 0)
    assert_invariants()
