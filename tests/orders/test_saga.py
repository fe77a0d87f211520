"""The order saga end to end: a real Celery worker, PostgreSQL and Redis."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.models import Reservation, StockLevel
from notifications.models import Notification
from orders import signals
from orders.models import SagaRun
from orders.saga import engine
from orders.saga import events as saga_events
from orders.saga.recovery import redrive_idle_sagas, saga_retry
from orders.services import OrderNotCancellable, order_cancel, order_ship
from orders.tasks import STEP_TASKS
from payments.models import FakeGatewayCharge, Payment, Refund
from shipping.models import Shipment
from tests.factories import ADDRESS, ProductFactory, UserFactory, place_order

from .saga_helpers import assert_invariants, snapshot, wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    return mailoutbox


@pytest.fixture
def product():
    return ProductFactory(sku="MOUSE", price=Decimal("29.99"), on_hand=10)


def stock(product):
    level = StockLevel.objects.get(product=product)
    return level.on_hand, level.reserved


def steps(saga, kind="forward"):
    return list(saga.steps.filter(kind=kind).order_by("position").values_list("name", "status"))


def test_happy_path_confirms_the_order(product, mailoutbox):
    order = place_order(products=[product], quantity=2)

    saga = wait_for_saga(order)

    assert saga.status == "completed"
    assert (saga.definition, saga.version) == ("order_fulfilment", 1)
    assert steps(saga) == [
        ("reserve_inventory", "succeeded"),
        ("process_payment", "succeeded"),
        ("create_shipment", "succeeded"),
        ("send_confirmation", "succeeded"),
    ]
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert stock(product) == (10, 2)
    assert order.reservation.status == "active" and order.reservation.expires_at is None
    payment = Payment.objects.get(order=order)
    assert (payment.status, payment.amount) == ("captured", Decimal("59.98"))
    shipment = Shipment.objects.get(order=order)
    assert shipment.status == "created" and shipment.tracking_number
    assert [m.subject for m in mailoutbox] == [f"Your order {str(order.public_id)[:12]}… is confirmed"]
    assert shipment.tracking_number in mailoutbox[0].body
    assert not saga.steps.filter(kind="compensation").exists()
    assert_invariants()

    order_ship(order=order)
    assert stock(product) == (8, 0)
    assert_invariants()


FAILURES = {
    "reserve_inventory": {"quantity": 11},
    "process_payment": {"payment_token": "tok_declined"},
    "create_shipment": {"address": ADDRESS | {"postal_code": "00000"}},
    "send_confirmation": {"customer_email": "ada+reject@example.com"},
}


@pytest.mark.parametrize("failing_step", list(FAILURES))
def test_a_failing_step_undoes_everything_before_it(product, failing_step, mailoutbox):
    options = dict(FAILURES[failing_step])
    customer = UserFactory(email=options.pop("customer_email", "ada@example.com"))
    before = stock(product)

    order = place_order(customer=customer, products=[product], quantity=options.pop("quantity", 2), **options)
    saga = wait_for_saga(order)

    assert saga.status == "compensated"
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert saga.failure_reason and order.cancel_reason == saga.failure_reason
    forward = dict(steps(saga))
    assert forward[failing_step] == "failed"
    names = list(forward)
    assert all(forward[n] == "succeeded" for n in names[: names.index(failing_step)])
    assert all(forward[n] == "pending" for n in names[names.index(failing_step) + 1 :])
    compensations = steps(saga, "compensation")
    # Every step's compensation runs, in reverse order, whatever the step rows say (each is a no-op
    # for a step that never ran): a row may be stale after a lost asynchronous commit.
    expected = [step.compensation for step in reversed(engine.ORDER_FULFILMENT.steps)]
    assert compensations == [(name, "succeeded") for name in expected]

    # Stock, payments and shipments are as before the order.
    assert stock(product) == before
    assert not Reservation.objects.filter(order=order, status="active").exists()
    charged = failing_step in ("create_shipment", "send_confirmation")
    assert Payment.objects.filter(order=order, status="refunded").count() == (1 if charged else 0)
    assert Payment.objects.filter(order=order, status="captured").count() == 0
    assert Refund.objects.filter(payment__order=order).count() == (1 if charged else 0)
    assert not Shipment.objects.filter(order=order).exclude(status="cancelled").exists()
    assert not any("confirmed" in m.subject for m in mailoutbox)
    assert_invariants()


def test_flaky_gateway_recovers_by_retry(product):
    order = place_order(products=[product], payment_token="tok_flaky")
    saga = wait_for_saga(order)
    assert saga.status == "completed"
    payment_step = saga.steps.get(name="process_payment")
    assert payment_step.attempts == 3
    assert FakeGatewayCharge.objects.get(idempotency_key=f"{order.public_id}:process_payment").attempts == 3
    assert Payment.objects.filter(order=order).count() == 1
    assert_invariants()


def test_retries_are_limited_then_the_saga_compensates(product, settings):
    order = place_order(products=[product], payment_token="tok_timeout")
    saga = wait_for_saga(order)
    assert saga.status == "compensated"
    step = saga.steps.get(name="process_payment")
    assert (step.status, step.attempts) == ("failed", settings.SAGA_STEP_MAX_ATTEMPTS)
    assert "gave up after 5 attempts" in step.error
    assert stock(product) == (10, 0)
    assert_invariants()


def test_a_failing_compensation_needs_attention_and_can_be_retried(product):
    order = place_order(
        products=[product], payment_token="tok_refund_fails", address=ADDRESS | {"postal_code": "00000"}
    )
    saga = wait_for_saga(order)

    assert saga.status == "failed"
    order.refresh_from_db()
    assert order.status == "needs_attention"
    refund = saga.steps.get(kind="compensation", name="refund_payment")
    assert refund.status == "failed" and "GatewayError" in refund.error
    assert "refund_payment gave up" in saga.error
    # The inventory is not released until the refund is done: compensations run in order.
    assert saga.steps.get(kind="compensation", name="release_inventory").status == "pending"

    # The gateway is fixed; an operator retries.
    FakeGatewayCharge.objects.filter(kind="charge").update(token="tok_visa")
    assert saga_retry(saga.pk) == "retrying from refund_payment"
    saga = wait_for_saga(order)
    assert saga.status == "compensated"
    assert stock(product) == (10, 0)
    assert Payment.objects.get(order=order).status == "refunded"
    assert_invariants()


def test_every_step_run_twice_changes_nothing_the_second_time(product):
    order = place_order(products=[product])
    saga = wait_for_saga(order)
    before = snapshot()

    for name in ("reserve_inventory", "process_payment", "create_shipment", "send_confirmation"):
        assert engine.run_forward(saga.pk, name, task_id="duplicate") == engine.STOP
        STEP_TASKS[name].delay(saga.pk)
    time.sleep(1.5)  # let the worker take the duplicate messages
    assert snapshot() == before
    assert list(saga.steps.values_list("deliveries", flat=True)) == [1, 1, 1, 1]


def test_every_compensation_run_twice_changes_nothing_the_second_time(product):
    order = place_order(products=[product], customer=UserFactory(email="x+reject@example.com"))
    saga = wait_for_saga(order)
    assert saga.status == "compensated"
    wait_until(lambda: Notification.objects.filter(template="order_cancelled").exclude(status="queued").exists())
    before = snapshot()

    for name in ("send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"):
        assert engine.run_compensation(saga.pk, name, task_id="duplicate") == engine.STOP
        STEP_TASKS[name].delay(saga.pk)
    time.sleep(1.5)
    assert snapshot() == before
    assert_invariants()


def test_a_lost_chain_is_completed_by_the_recovery_job(product, monkeypatch):
    sent = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: sent.append(names))
    order = place_order(products=[product])  # committed, but the chain never reached the broker
    saga = SagaRun.objects.get(order=order)
    assert sent == [["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]]
    monkeypatch.undo()

    # Run the first step alone: the rest of the chain is "lost".
    STEP_TASKS["reserve_inventory"].delay(saga.pk)
    wait_until(lambda: saga.steps.get(name="reserve_inventory").status == "succeeded")
    saga.refresh_from_db()
    assert saga.status == "running"

    assert redrive_idle_sagas(idle_seconds=3600) == {}  # not idle long enough yet
    assert redrive_idle_sagas(idle_seconds=0) == {"redriven from process_payment": 1}
    saga = wait_for_saga(order)
    assert saga.status == "completed" and saga.redrives == 1
    assert_invariants()


def test_a_saga_that_never_started_is_started_by_the_recovery_job(product, monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product])
    monkeypatch.undo()
    assert SagaRun.objects.get(order=order).status == "pending"

    assert redrive_idle_sagas(idle_seconds=0) == {"redriven from reserve_inventory": 1}
    assert wait_for_saga(order).status == "completed"
    assert_invariants()


def test_a_step_whose_worker_died_is_rerun_and_a_crash_loop_needs_attention(product, monkeypatch, settings):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product])
    monkeypatch.undo()
    saga = SagaRun.objects.get(order=order)
    # The step was taken and its worker killed mid-way, over and over.
    settings.SAGA_STEP_MAX_DELIVERIES = 3
    SagaRun.objects.filter(pk=saga.pk).update(status="running", started_at=timezone.now())
    saga.steps.filter(name="reserve_inventory").update(
        status="running", deliveries=3, attempts=3, task_id="killed", started_at=timezone.now() - timedelta(hours=1)
    )

    assert redrive_idle_sagas(idle_seconds=0) == {"redriven from reserve_inventory": 1}
    saga = wait_for_saga(order)
    assert saga.status == "failed"
    order.refresh_from_db()
    assert order.status == "needs_attention"
    assert "delivered 4 times" in saga.error
    assert_invariants()

    settings.SAGA_STEP_MAX_DELIVERIES = 10
    assert saga_retry(saga.pk) == "retrying from reserve_inventory"
    assert wait_for_saga(order).status == "completed"
    assert_invariants()


def test_a_running_step_is_not_redriven_while_within_its_time_limit(product, monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product])
    saga = SagaRun.objects.get(order=order)
    saga.steps.filter(name="reserve_inventory").update(status="running", task_id="alive", started_at=timezone.now())
    SagaRun.objects.filter(pk=saga.pk).update(status="running")
    assert redrive_idle_sagas(idle_seconds=0) == {"waiting": 1}


def test_a_saga_past_its_deadline_is_compensated(product, monkeypatch):
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)
    order = place_order(products=[product])
    monkeypatch.undo()
    saga = SagaRun.objects.get(order=order)
    STEP_TASKS["reserve_inventory"].delay(saga.pk)
    wait_until(lambda: saga.steps.get(name="reserve_inventory").status == "succeeded")
    SagaRun.objects.filter(pk=saga.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))

    assert redrive_idle_sagas(idle_seconds=0) == {"compensating": 1}
    saga = wait_for_saga(order)
    assert saga.status == "compensated"
    assert saga.failure_reason == "We could not complete your order in time."
    assert stock(product) == (10, 0)
    assert_invariants()


def test_customer_cancels_a_confirmed_order(product):
    order = place_order(products=[product], quantity=3)
    wait_for_saga(order)

    order = order_cancel(order=order)
    assert order.status == "compensating"
    saga = wait_for_saga(order, {"compensated", "failed"})
    assert saga.status == "compensated"
    order.refresh_from_db()
    assert (order.status, order.cancel_reason) == ("cancelled", "Cancelled at your request.")
    assert stock(product) == (10, 0)
    assert Payment.objects.get(order=order).status == "refunded"
    assert Shipment.objects.get(order=order).status == "cancelled"
    wait_until(lambda: Notification.objects.filter(order=order, template="order_cancelled", status="sent").exists())
    assert order_cancel(order=order).status == "cancelled"  # idempotent
    assert_invariants()


def test_an_order_cannot_be_cancelled_once_shipped(product):
    order = place_order(products=[product])
    wait_for_saga(order)
    order_ship(order=order)
    with pytest.raises(OrderNotCancellable, match="only until it ships"):
        order_cancel(order=order)
    order.refresh_from_db()
    assert order.status == "shipped"
    assert_invariants()


def test_signals_are_sent_after_commit(product):
    received, lock = [], threading.Lock()

    def receiver(signal, saga, order, step, error, **kwargs):
        with lock:
            received.append((signal, step))

    names = ["saga_started", "step_succeeded", "step_failed", "saga_completed", "saga_compensated", "saga_failed"]
    for name in names:
        getattr(signals, name).connect(receiver, dispatch_uid=f"test-{name}")
    try:
        order = place_order(products=[product])
        wait_for_saga(order)
        wait_until(lambda: len(received) == 6, timeout=5, message="six signals")
    finally:
        for name in names:
            getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")
    assert received == [
        (signals.saga_started, None),
        (signals.step_succeeded, "reserve_inventory"),
        (signals.step_succeeded, "process_payment"),
        (signals.step_succeeded, "create_shipment"),
        (signals.step_succeeded, "send_confirmation"),
        (signals.saga_completed, None),
    ]
