"""Order emails outside the saga: the row is written with the transition, the send is only enqueued on commit."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from notifications import tasks
from notifications.models import Notification
from orders.models import Order, SagaRun
from orders.saga import engine
from orders.saga import events as saga_events
from orders.services import order_cancel, order_deliver, order_ship
from shipping.models import Shipment
from tests.factories import ProductFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fake_backend(settings, monkeypatch):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)  # no saga runs here


def confirmed_order():
    order = place_order(products=[ProductFactory(on_hand=10)])
    reserve_stock(order)
    Shipment.objects.create(order=order, carrier="fake", tracking_number="FK1", idempotency_key=f"{order.pk}")
    Order.objects.filter(pk=order.pk).update(status="confirmed")
    SagaRun.objects.filter(order=order).update(status="completed")
    return Order.objects.get(pk=order.pk)


def shipped_order():
    order = confirmed_order()
    order_ship(order=order)
    return Order.objects.get(pk=order.pk)


@pytest.fixture
def broker_down(monkeypatch):
    """Every task message fails to leave, as when Redis is unreachable at commit."""

    def unreachable(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    for task in (tasks.send_notification, tasks.notify_order):
        monkeypatch.setattr(task, "delay", unreachable)
        monkeypatch.setattr(task, "apply_async", unreachable)


def run_retry_job(monkeypatch):
    """The beat job ``notifications.retry_queued``, ten minutes later, its messages run at once."""
    Notification.objects.update(updated_at=timezone.now() - timedelta(minutes=11))
    monkeypatch.setattr(tasks.send_notification, "delay", lambda pk: tasks.send_notification(pk))
    return tasks.retry_queued_notifications()


def compensating_order():
    order = place_order()
    order_cancel(order=order)  # every compensation is dispatched (not run here): the order is compensating
    return Order.objects.get(pk=order.pk)


def finish_compensation(order):
    """What the last compensation does: the order ends cancelled (the saga engine's own step)."""
    with transaction.atomic():
        saga = engine.lock_saga(order.saga.pk)
        engine.finish_compensation(saga, timezone.now())


EVENTS = {
    "ship": (confirmed_order, lambda order: order_ship(order=order), "order_shipped", "is on its way"),
    "deliver": (shipped_order, lambda order: order_deliver(order=order), "order_delivered", "was delivered"),
    "cancel": (compensating_order, finish_compensation, "order_cancelled", "was cancelled"),
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_an_order_email_is_not_lost_when_the_broker_is_down_at_commit(
    event, broker_down, monkeypatch, django_capture_on_commit_callbacks
):
    make, act, template, subject = EVENTS[event]
    order = make()
    Notification.objects.all().delete()  # earlier events' emails are not this test's

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        act(order)  # the transition commits; enqueueing its email fails, and that is no error

    assert callbacks, "the send is enqueued on commit"
    notification = Notification.objects.get(order=order, template=template)
    assert (notification.status, notification.attempts) == ("queued", 0)
    assert not mail.outbox

    assert run_retry_job(monkeypatch) == 1

    notification.refresh_from_db()
    assert notification.status == "sent"
    assert [subject in m.subject for m in mail.outbox] == [True]


def test_the_email_row_rolls_back_with_a_transition_that_fails(broker_down):
    from django.db import transaction

    order = confirmed_order()
    with pytest.raises(RuntimeError), transaction.atomic():
        order_ship(order=order)
        raise RuntimeError("something after the ship failed")

    assert not Notification.objects.filter(order=order).exists()
    assert Order.objects.get(pk=order.pk).status == "confirmed"


def test_a_transition_enqueues_the_send_of_its_email_once_on_commit(monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(tasks.send_notification, "delay", lambda pk: sent.append(pk))
    order = confirmed_order()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        order_ship(order=order)
        assert Notification.objects.filter(order=order, template="order_shipped", status="queued").count() == 1
    assert sent == []  # nothing leaves before commit
    for callback in callbacks:
        callback()

    assert sent == [Notification.objects.get(order=order, template="order_shipped").pk]
