import logging

from celery import shared_task

from .services import PermanentDeliveryError, TransientDeliveryError, notification_for_order, notification_send

logger = logging.getLogger(__name__)

# Sending email: transient mail-server failures retry with exponential backoff (5 s … 10 min).
EMAIL_TASK = {
    "autoretry_for": (TransientDeliveryError,),
    "max_retries": 8,
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "soft_time_limit": 30,
    "time_limit": 45,
}


@shared_task(bind=True, name="notifications.send", **EMAIL_TASK)
def send_notification(self, notification_id):
    """Send one notification; a transient mail failure retries with backoff."""
    notification_send(notification_id=notification_id)


@shared_task(bind=True, name="notifications.notify_order", **EMAIL_TASK)
def notify_order(self, order_id, template):
    """Queue and send one order email; a refused address is recorded, not retried.

    Order transitions now queue their email themselves (``order_notification_queue``)
    and enqueue ``notifications.send``; this task stays for messages sent before that.
    """
    from orders.models import Order

    order = Order.objects.select_related("customer").filter(pk=order_id).first()
    if order is None:
        return
    notification = notification_for_order(order=order, template=template)
    try:
        notification_send(notification_id=notification.pk)
    except PermanentDeliveryError:
        logger.warning("notification %s refused for good", notification.pk)


@shared_task(name="notifications.retry_queued", soft_time_limit=60, time_limit=90)
def retry_queued_notifications(limit=500):
    """Beat: send again the queued notifications whose task was lost or gave up."""
    from .services import notifications_to_retry

    ids = list(notifications_to_retry().order_by("updated_at").values_list("pk", flat=True)[:limit])
    for notification_id in ids:
        send_notification.delay(notification_id)
    return len(ids)
