import pytest
from django.core import mail

from notifications.models import Notification
from notifications.services import (
    PermanentDeliveryError,
    TransientDeliveryError,
    notification_queue,
    notification_queue_and_send,
    notification_send,
)

pytestmark = pytest.mark.django_db

CONTEXT = {
    "customer_name": "Ada",
    "order_id": "0f8c",
    "lines": [{"quantity": 2, "name": "Mouse", "sku": "M", "line_total": "59.98"}],
    "total": "59.98",
    "currency": "USD",
    "tracking_number": "FK1",
}


@pytest.fixture(autouse=True)
def fake_backend(settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"


def queue(recipient="ada@example.com", key="k1"):
    return notification_queue(template="order_confirmed", recipient=recipient, context=CONTEXT, idempotency_key=key)


def test_queue_is_idempotent():
    assert queue().pk == queue().pk
    assert Notification.objects.count() == 1


def test_send_renders_text_and_html_and_sends_once():
    notification = queue()
    notification_send(notification_id=notification.pk)
    notification_send(notification_id=notification.pk)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@example.com"]
    assert "Total: 59.98 USD" in message.body
    assert "FK1" in message.alternatives[0].content
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 1)


def test_refused_recipient_fails_for_good():
    notification = queue(recipient="ada+reject@example.com")
    with pytest.raises(PermanentDeliveryError):
        notification_send(notification_id=notification.pk)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", 1)
    assert "refused" in notification.last_error


def test_unreachable_server_is_transient_and_stays_queued():
    notification = queue(recipient="ada+down@example.com")
    with pytest.raises(TransientDeliveryError):
        notification_send(notification_id=notification.pk)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("queued", 1)
    assert not mail.outbox


def test_the_order_email_task_run_twice_sends_once():
    from notifications.tasks import notify_order
    from orders.models import Order
    from tests.factories import place_order

    order = place_order()
    Order.objects.filter(pk=order.pk).update(status="shipped")  # an order email goes out only while it is true
    notify_order(order.pk, "order_shipped")
    notify_order(order.pk, "order_shipped")
    assert len(mail.outbox) == 1
    notification = Notification.objects.get(order=order)
    assert (notification.template, notification.status, notification.attempts) == ("order_shipped", "sent", 1)


def test_queue_and_send_sends_a_new_notification_once_and_leaves_a_sent_one_alone():
    def deliver():
        return notification_queue_and_send(
            template="order_confirmed", recipient="ada@example.com", context=CONTEXT, idempotency_key="qs"
        )

    first, second = deliver(), deliver()

    assert first.pk == second.pk
    assert (second.status, second.attempts) == ("sent", 1)
    assert len(mail.outbox) == 1


def test_queue_and_send_to_a_refused_recipient_keeps_the_failure():
    with pytest.raises(PermanentDeliveryError):
        notification_queue_and_send(
            template="order_confirmed", recipient="ada+reject@example.com", context=CONTEXT, idempotency_key="qr"
        )
    notification = Notification.objects.get(idempotency_key="qr")
    assert (notification.status, notification.attempts) == ("failed", 1)
    assert mail.outbox == []


def test_the_fake_backend_keeps_only_the_latest_messages(monkeypatch):
    from notifications.backends import FakeEmailBackend

    monkeypatch.setattr(FakeEmailBackend, "OUTBOX_LIMIT", 2)
    for key in ("a", "b", "c"):
        notification_send(notification_id=queue(key=key).pk)
    assert len(mail.outbox) == 2
