"""Compensations ask the outside world by key, and close the key.

The gateway and carrier here keep their books in Redis (``tests/fakes.py``), outside
PostgreSQL, as real ones do. "A crash between claim and record" is played by putting the
step row back as the claim found it once the external call happened: what a PostgreSQL
crash does to a claim committed asynchronously (``SAGA_ASYNC_COMMIT``). Forward steps run
in the test's thread (the transport is captured); compensations run on the real worker.
"""

import contextlib
import threading
from decimal import Decimal

import pytest
from django.db import connection

from notifications.models import Notification
from orders.models import SagaStep
from orders.saga import engine
from orders.saga import events as saga_events
from orders.saga import steps as saga_steps
from orders.services import order_cancel
from tests import fakes
from tests.factories import ProductFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]

STEP_ROW = ["status", "attempts", "deliveries", "task_id", "started_at", "next_attempt_at", "finished_at"]


@pytest.fixture(autouse=True)
def redis_adapters(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    settings.PAYMENT_GATEWAY = "tests.fakes.RedisGateway"
    settings.SHIPPING_CARRIER = "tests.fakes.RedisCarrier"
    fakes.redis_books_clear()
    yield
    fakes.redis_books_clear()


@pytest.fixture
def transport(monkeypatch):
    """Forward chains are not sent (the test drives the forward steps); compensations are."""
    real = saga_events.dispatch
    monkeypatch.setattr(
        saga_events, "dispatch", lambda saga_id, names: real(saga_id, names) if names[0] not in FORWARD else None
    )


FORWARD = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


def order_at(step):
    """An order whose saga ran every forward step before ``step``."""
    order = place_order(products=[ProductFactory(sku="MOUSE", price=Decimal("29.99"), on_hand=10)], quantity=2)
    for name in FORWARD[: FORWARD.index(step)]:
        assert engine.run_forward(order.saga.pk, name, task_id=f"t-{name}") == engine.CONTINUE
    return order


def step_row(order, name):
    return SagaStep.objects.filter(saga=order.saga, kind="forward", name=name).values(*STEP_ROW).get()


@contextlib.contextmanager
def crash_losing_the_claim(order, name):
    """The claim of ``name`` is lost to a database crash once its external call went out."""
    before = step_row(order, name)
    yield lambda: SagaStep.objects.filter(saga=order.saga, kind="forward", name=name).update(**before)
    assert step_row(order, name) == before, "the crash should have left the step as the claim found it"


def external_call(step):
    """(owner, attribute) of the call ``step`` makes to the outside world."""
    return {
        "process_payment": (fakes.RedisGateway, "charge"),
        "create_shipment": (fakes.RedisCarrier, "book"),
        "send_confirmation": (saga_steps, "notification_queue_and_send"),
    }[step]


def gateway_books(order):
    return sorted(entry for entry in fakes.RedisGateway().books() if entry[0].startswith(f"{order.public_id}:"))


def carrier_books(order):
    return sorted(entry for entry in fakes.RedisCarrier().books() if entry[0].startswith(f"{order.public_id}:"))


def cancel_and_wait(order):
    order_cancel(order=order)
    saga = wait_for_saga(order, {"compensated", "failed"})
    assert saga.status == "compensated", list(saga.steps.values_list("kind", "name", "status", "error"))
    return saga


@pytest.mark.parametrize("step", ["process_payment", "create_shipment"])
def test_an_effect_whose_claim_a_crash_lost_is_undone_when_the_order_is_cancelled(step, transport, monkeypatch):
    order = order_at(step)
    owner, attribute = external_call(step)
    real = getattr(owner, attribute)
    with crash_losing_the_claim(order, step) as crash:

        def call_then_crash(self, **kwargs):
            answer = real(self, **kwargs)
            crash()
            return answer

        monkeypatch.setattr(owner, attribute, call_then_crash)
        assert engine.run_forward(order.saga.pk, step, task_id="lost") == engine.STOP  # nothing recorded
    monkeypatch.setattr(owner, attribute, real)
    key = f"{order.public_id}:{step}"
    if step == "process_payment":
        assert gateway_books(order) == [(key, "charge")]  # the money moved; our rows know nothing of it
    else:
        assert carrier_books(order) == [(key, False)]  # a parcel is booked; we have no shipment row

    cancel_and_wait(order)

    if step == "process_payment":
        assert gateway_books(order) == [(key, "charge"), (f"{key}:refund", "refund")]
    else:
        assert carrier_books(order) == [(key, True)]
    assert_invariants()


@pytest.mark.parametrize("step", ["process_payment", "create_shipment", "send_confirmation"])
def test_a_call_still_in_flight_when_its_compensation_found_nothing_is_refused(
    step, transport, monkeypatch, mailoutbox
):
    """The claim was lost, so nothing tells the cancel that the call is running; the call lands after the
    compensation asked by key and found nothing. The key was closed by then: the call is refused."""
    order = order_at(step)
    owner, attribute = external_call(step)
    real = getattr(owner, attribute)
    reached, go, outcome = threading.Event(), threading.Event(), []

    def late_call(*args, **kwargs):
        reached.set()
        assert go.wait(30)
        return real(*args, **kwargs)

    def forward():
        try:
            outcome.append(engine.run_forward(order.saga.pk, step, task_id="lost"))
        finally:
            connection.close()

    with crash_losing_the_claim(order, step) as crash:
        monkeypatch.setattr(owner, attribute, late_call)
        thread = threading.Thread(target=forward)
        thread.start()
        assert reached.wait(30)
        crash()
        cancel_and_wait(order)  # compensates every step while the call is still on its way
        go.set()
        thread.join(30)
    assert outcome == [engine.STOP]

    key = f"{order.public_id}:{step}"
    if step == "process_payment":
        assert gateway_books(order) == []  # no charge, so nothing to refund
    elif step == "create_shipment":
        assert carrier_books(order) == []
    else:
        assert Notification.objects.get(idempotency_key=key).status == "failed"
        wait_until(lambda: any("cancelled" in m.subject for m in mailoutbox), message="the cancellation email")
        assert not any("confirmed" in m.subject for m in mailoutbox)
    assert_invariants()
