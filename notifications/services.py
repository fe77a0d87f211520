"""Outgoing messages: queue once, render, send through Django's email backend."""

import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from config import sql
from orders.models import OrderStatus

from .models import Notification, NotificationStatus


class PermanentDeliveryError(Exception):
    """The message can never be delivered (address refused)."""


class TransientDeliveryError(Exception):
    """The mail server could not take the message now; try again later."""


def order_email_context(order, **extra):
    """What every order email may show: the customer's name, lines and total."""
    customer = order.customer
    return {
        "order_id": str(order.public_id),
        "customer_name": customer.get_full_name() or customer.get_username(),
        "lines": [
            {"sku": line.sku, "name": line.name, "quantity": line.quantity, "line_total": str(line.line_total)}
            for line in order.lines.all()
        ],
        "total": str(order.total),
        "currency": order.currency,
        **extra,
    }


# Order events that tell the customer something: (template, idempotency key suffix).
ORDER_EVENTS = {
    OrderStatus.CANCELLED: "order_cancelled",
    OrderStatus.SHIPPED: "order_shipped",
    OrderStatus.DELIVERED: "order_delivered",
}


# Is an order email still true when it is about to go out? What each one tells the
# customer, and the order states in which that holds. One rule for every path that
# sends (the saga's send_confirmation step, ``notifications.send``, the retry job),
# checked under the notification's row lock. The saga's own step sends the
# confirmation while the order is ``shipment_created`` (it is confirmed after);
# "shipped" is still true of a delivered order; the cancellation notice goes out
# while the compensations run.
STILL_TRUE_IN = {
    "order_confirmed": {
        OrderStatus.SHIPMENT_CREATED,
        OrderStatus.CONFIRMED,
        OrderStatus.SHIPPED,
        OrderStatus.DELIVERED,
    },
    "order_shipped": {OrderStatus.SHIPPED, OrderStatus.DELIVERED},
    "order_delivered": {OrderStatus.DELIVERED},
    "order_cancelled": {OrderStatus.COMPENSATING, OrderStatus.CANCELLED},
}
# An order that needs attention waits for an operator, who may resume it or close
# it: its emails wait too (they stay queued) until the order's story is settled.
UNDECIDED = {OrderStatus.NEEDS_ATTENTION}

SEND, HOLD, WITHDRAW = "send", "hold", "withdraw"


def order_email_verdict(template, order_status) -> str:
    """``SEND`` an email true of an order in ``order_status``, ``HOLD`` it while an operator
    decides, or ``WITHDRAW`` it for good. An email about no order, or not about one, is sent."""
    true_in = STILL_TRUE_IN.get(template)
    if true_in is None or order_status is None or order_status in true_in:
        return SEND
    return HOLD if order_status in UNDECIDED else WITHDRAW


def notification_for_order(*, order, template) -> Notification:
    """Queue (once) the email ``template`` about ``order``."""
    from shipping.selectors import shipment_live

    shipment = shipment_live(order=order)
    context = order_email_context(
        order, reason=order.cancel_reason, tracking_number=shipment.tracking_number if shipment else ""
    )
    return notification_queue(
        template=template,
        recipient=order.customer.email,
        context=context,
        idempotency_key=f"{order.public_id}:{template}",
        order=order,
    )


def order_notification_queue(*, order, template) -> Notification:
    """Queue the email ``template`` about ``order`` in the caller's transaction; send it once that commits.

    The row commits with the caller's change. Enqueueing the send is robust: if
    the broker is unreachable the row stays queued and ``notifications.retry_queued``
    sends it later.
    """
    from .tasks import send_notification

    notification = notification_for_order(order=order, template=template)
    notification_id = notification.pk
    transaction.on_commit(lambda: send_notification.delay(notification_id), robust=True)
    return notification


def notification_queue(*, template, recipient, context, idempotency_key, order=None) -> Notification:
    """Create the notification once (one INSERT); the same key returns the existing one."""
    notification = Notification(
        template=template, recipient=recipient, context=context, idempotency_key=idempotency_key, order=order
    )
    if not sql.insert(notification, ignore_conflicts=True):
        notification = Notification.objects.get(idempotency_key=idempotency_key)
    return notification


def notification_void(*, template, recipient, idempotency_key, reason, order=None) -> Notification:
    """Make sure the message under ``idempotency_key`` is never sent from now on; returns it.

    A queued one fails with ``reason``; a missing one is created failed (a later
    ``notification_queue_and_send`` with the key finds it and sends nothing). One that was
    sent stays sent: the caller sends what must follow it. The unique key orders this against
    a send in progress: the INSERT waits for that transaction to end.
    """
    notification = Notification(
        template=template, recipient=recipient, idempotency_key=idempotency_key, order=order, context={}
    )
    with transaction.atomic():
        if not sql.insert(notification, ignore_conflicts=True):
            notification = Notification.objects.select_for_update().get(idempotency_key=idempotency_key)
        if notification.status == NotificationStatus.QUEUED:
            notification.mark_failed(reason)
            notification.save(update_fields=["status", "last_error", "updated_at"])
    return notification


def _render(notification):
    context = {**notification.context, "recipient": notification.recipient}
    base = f"notifications/{notification.template}"
    subject = render_to_string(f"{base}_subject.txt", context).strip()
    text = render_to_string(f"{base}.txt", context)
    html = render_to_string(f"{base}.html", context)
    return subject, text, html


def notification_send(*, notification_id) -> Notification:
    """Send a queued notification at most once.

    The row is locked while sending, so two workers never send it twice; a
    sent one is left alone. Raises ``TransientDeliveryError`` (retry later) or
    ``PermanentDeliveryError`` (the notification is ``failed``).
    """
    with transaction.atomic():
        # The order comes in the same statement (not locked): its state decides whether the email is still true.
        notification = (
            Notification.objects.select_for_update(of=("self",)).select_related("order").get(pk=notification_id)
        )
        batch = sql.Batch()
        failed = _deliver(notification, batch)
        batch.send()
    if failed is not None:
        raise failed
    return notification


def notification_queue_and_send(*, template, recipient, context, idempotency_key, order=None) -> Notification:
    """``notification_queue`` then ``notification_send``, in one transaction when the notification is new.

    A row inserted by this transaction is invisible to everybody else until it
    commits: it is as good as locked while the message goes out. An existing
    one (a repeated call) goes through ``notification_send``, which sends it
    only if it is still queued. Raises as ``notification_send`` does.
    """
    notification = Notification(
        template=template, recipient=recipient, context=context, idempotency_key=idempotency_key, order=order
    )
    with transaction.atomic():
        created = sql.insert(notification, ignore_conflicts=True)
        batch = sql.Batch()  # the status update and its audit event: one round trip
        failed = _deliver(notification, batch) if created else None
        batch.send()
    if not created:
        notification = Notification.objects.get(idempotency_key=idempotency_key)
        return notification_send(notification_id=notification.pk)
    if failed is not None:
        raise failed
    return notification


def _deliver(notification, batch):
    """Send a locked notification if it is queued and still true; returns the exception to raise after commit, or None.

    An order email that is no longer true (``order_email_verdict``) is withdrawn:
    it ends ``failed`` with the reason, audited; one that must wait for an
    operator stays queued (the retry job looks again later).
    """
    if notification.status != NotificationStatus.QUEUED:
        return None
    order = notification.order if notification.order_id else None
    verdict = order_email_verdict(notification.template, order.status if order is not None else None)
    if verdict == HOLD and order is not None:  # only an order's state can hold an email back
        notification.last_error = f"waiting: order {order.get_status_display().lower()}"
        _save(notification, ["last_error", "updated_at"], batch)
        return None
    if verdict == WITHDRAW:
        _withdraw(notification, order, batch)
        return None
    notification.attempts += 1
    subject, text, html = _render(notification)
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [notification.recipient])
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        notification.mark_failed(f"recipient refused: {exc}", batch=batch)
        _save(notification, ["status", "attempts", "last_error", "updated_at"], batch)
        return PermanentDeliveryError(str(exc))
    except (smtplib.SMTPException, OSError) as exc:
        notification.last_error = f"{type(exc).__name__}: {exc}"
        _save(notification, ["attempts", "last_error", "updated_at"], batch)
        return TransientDeliveryError(notification.last_error)
    notification.mark_sent(timezone.now(), batch=batch)
    _save(notification, ["status", "attempts", "sent_at", "last_error", "updated_at"], batch)
    return None


def _save(notification, fields, batch):
    batch.add(*sql.update_statement(notification, fields))


def _withdraw(notification, order, batch):
    from audit.services import audit_record

    reason = f"not sent: no longer true (order is {order.status})"
    notification.mark_failed(reason, batch=batch)
    _save(notification, ["status", "last_error", "updated_at"], batch)
    audit_record(
        obj=notification,
        event="notification_withdrawn",
        from_state=NotificationStatus.QUEUED,
        to_state=notification.status,
        payload={"template": notification.template, "order_status": order.status, "reason": reason},
        order_id=order.public_id,
        batch=batch,
    )


def notifications_to_retry(*, older_than_seconds=600, max_attempts=10):
    """Queued notifications nobody sent for a while (a lost task, a long mail outage)."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return Notification.objects.filter(
        status=NotificationStatus.QUEUED, updated_at__lte=cutoff, attempts__lt=max_attempts
    )
