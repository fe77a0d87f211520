"""Engine edge cases driven step by step in the test's own thread (the transport is captured)."""

import pytest

from orders.models import SagaRun
from orders.saga import engine
from orders.services import order_cancel
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)  # the fake gateway refuses to run inside a transaction

STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


def test_a_cancel_asked_during_the_last_step_is_not_lost(sent, monkeypatch):
    order = place_order(products=[ProductFactory(on_hand=5)])
    saga = order.saga
    for name in STEPS[:3]:
        assert engine.run_forward(saga.pk, name, task_id="t") == engine.CONTINUE

    # The customer cancels while send_confirmation is sending the email.
    from orders.saga import steps

    real_send = steps.notification_send

    def send_then_cancel(**kwargs):
        result = real_send(**kwargs)
        assert order_cancel(order=order).status == "shipment_created"  # the step is in flight: only flagged
        return result

    monkeypatch.setattr(steps, "notification_send", send_then_cancel)
    assert engine.run_forward(saga.pk, "send_confirmation", task_id="t") == engine.STOP

    saga = SagaRun.objects.get(pk=saga.pk)
    assert saga.status == "compensating" and saga.cancel_requested
    assert sent[-1] == ["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]
    order.refresh_from_db()
    assert order.status == "compensating"
