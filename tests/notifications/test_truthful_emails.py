"""An order email is re-checked against its order when it is sent: one no longer true is not sent."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from notifications import tasks
from notifications.models import Notification
from notifications.services import (
    HOLD,
    SEND,
    WITHDRAW,
    notification_for_order,
    notification_queue_and_send,
    notification_send,
    order_email_verdict,
)
from orders.models import Order, OrderStatus
from orders.saga import events as saga_events
from tests.factories import place_order

pytestmark = pytest.mark.django_db

S = OrderStatus
# What each order email says, and in which order states that is (still) true.
TRUE_IN = {
    "order_confirmed": {S.SHIPMENT_CREATED, S.CONFIRMED, S.SHIPPED, S.DELIVERED},
    "order_shipped": {S.SHIPPED, S.DELIVERED},
    "order_delivered": {S.DELIVERED},
    "order_cancelled": {S.COMPENSATING, S.CANCELLED},
}


@pytest.fixture(autouse=True)
def fake_backend(settings, monkeypatch):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)  # no saga runs here


@pytest.mark.parametrize("template", list(TRUE_IN))
@pytest.mark.parametrize("status", list(OrderStatus))
def test_an_order_email_is_sent_only_while_true_and_waits_while_an_operator_decides(template, status):
    expected = SEND if status in TRUE_IN[template] else HOLD if status == S.NEEDS_ATTENTION else WITHDRAW
    assert order_email_verdict(template, status) == expected


def test_an_email_about_no_order_or_of_another_kind_is_always_sent():
    assert order_email_verdict("order_confirmed", None) == SEND
    assert order_email_verdict("password_reset", S.CANCELLED) == SEND


def order_in(status, template="order_confirmed"):
    """An order whose ``template`` email was queued (say, while the mail server was down), now ``status``."""
    order = place_order()
    notification = notification_for_order(order=order, template=template)
    Order.objects.filter(pk=order.pk).update(status=status)
    return order, notification


def run_retry_job(monkeypatch):
    """The beat job ``notifications.retry_queued``, ten minutes later, its messages run at once."""
    Notification.objects.update(updated_at=timezone.now() - timedelta(minutes=11))
    monkeypatch.setattr(tasks.send_notification, "delay", lambda pk: tasks.send_notification(pk))
    return tasks.retry_queued_notifications()


def send_directly(notification, monkeypatch):
    notification_send(notification_id=notification.pk)


def send_by_the_retry_job(notification, monkeypatch):
    assert run_retry_job(monkeypatch) == 1


SEND_PATHS = [send_directly, send_by_the_retry_job]


@pytest.mark.parametrize("send", SEND_PATHS)
@pytest.mark.parametrize("status", ["compensating", "cancelled"])
def test_a_confirmation_for_an_order_being_cancelled_is_withdrawn_not_sent(send, status, monkeypatch):
    order, notification = order_in(status)

    send(notification, monkeypatch)

    assert mail.outbox == []
    notification.refresh_from_db()
    assert notification.status == "failed"
    assert notification.last_error == f"not sent: no longer true (order is {status})"
    event = AuditEvent.objects.get(event="notification_withdrawn", object_id=str(notification.pk))
    assert (event.from_state, event.to_state, event.order_id) == ("queued", "failed", order.public_id)
    assert event.payload == {"template": "order_confirmed", "order_status": status, "reason": notification.last_error}
    # A later run of the job leaves it alone: withdrawn is final.
    assert run_retry_job(monkeypatch) == 0


@pytest.mark.parametrize("send", SEND_PATHS)
def test_a_shipped_email_for_an_order_no_longer_shipped_is_withdrawn(send, monkeypatch):
    _, notification = order_in("cancelled", template="order_shipped")
    send(notification, monkeypatch)
    notification.refresh_from_db()
    assert (notification.status, mail.outbox) == ("failed", [])


@pytest.mark.parametrize("send", SEND_PATHS)
@pytest.mark.parametrize(
    ("template", "status"),
    [("order_confirmed", "confirmed"), ("order_confirmed", "shipped"), ("order_shipped", "delivered")],
)
def test_an_email_that_is_still_true_is_sent(send, template, status, monkeypatch):
    _, notification = order_in(status, template=template)
    send(notification, monkeypatch)
    notification.refresh_from_db()
    assert notification.status == "sent"
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("send", SEND_PATHS)
def test_an_email_waits_while_the_order_needs_attention_then_follows_the_operators_decision(send, monkeypatch):
    order, notification = order_in("needs_attention")

    send(notification, monkeypatch)

    notification.refresh_from_db()
    assert (notification.status, notification.attempts, mail.outbox) == ("queued", 0, [])
    assert "waiting: order needs attention" in notification.last_error
    # The operator retried the saga: the order is back where the confirmation is true; the next run sends it.
    Order.objects.filter(pk=order.pk).update(status="shipment_created")
    send(notification, monkeypatch)
    notification.refresh_from_db()
    assert (notification.status, len(mail.outbox)) == ("sent", 1)


def test_a_held_email_is_withdrawn_once_the_operator_resolves_the_order(monkeypatch):
    order, notification = order_in("needs_attention")
    run_retry_job(monkeypatch)
    Order.objects.filter(pk=order.pk).update(status="cancelled")

    run_retry_job(monkeypatch)

    notification.refresh_from_db()
    assert (notification.status, mail.outbox) == ("failed", [])


def test_the_sagas_own_confirmation_is_sent_while_the_order_is_shipment_created():
    order = place_order()
    Order.objects.filter(pk=order.pk).update(status="shipment_created")
    order.refresh_from_db()

    notification = notification_queue_and_send(
        template="order_confirmed",
        recipient=order.customer.email,
        context={"order_id": str(order.public_id)},
        idempotency_key=f"{order.public_id}:send_confirmation",
        order=order,
    )

    assert notification.status == "sent" and len(mail.outbox) == 1


def test_the_sagas_confirmation_step_retried_after_the_order_was_cancelled_sends_nothing():
    order = place_order()
    key = f"{order.public_id}:send_confirmation"
    notification_for_order(order=order, template="order_confirmed")  # an earlier attempt queued it ...
    Notification.objects.filter(order=order).update(idempotency_key=key)
    Order.objects.filter(pk=order.pk).update(status="cancelled")  # ... then the saga gave up

    notification = notification_queue_and_send(
        template="order_confirmed", recipient=order.customer.email, context={}, idempotency_key=key, order=order
    )

    assert (notification.status, mail.outbox) == ("failed", [])
