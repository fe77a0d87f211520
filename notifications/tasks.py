from celery import shared_task

from .services import TransientDeliveryError, notification_send


@shared_task(
    bind=True,
    name="notifications.send",
    autoretry_for=(TransientDeliveryError,),
    max_retries=8,
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    soft_time_limit=30,
    time_limit=45,
)
def send_notification(self, notification_id):
    """Send one notification; a transient mail failure retries with backoff."""
    notification_send(notification_id=notification_id)
