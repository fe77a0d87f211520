"""Order events become customer emails.

The notification row is written by a synchronous receiver, in the same
transaction as the transition it tells about: the two commit (or roll back)
together, so an email is never lost between them. Sending is only enqueued,
once that transaction commits, and robustly: a broker outage at commit is
logged, never an error for the caller, and ``notifications.retry_queued``
sends the queued row later. A failing mail server never breaks or slows the
saga. The order confirmation is the saga's own ``send_confirmation`` step.
"""

from django_fsm.signals import post_transition

from orders.models import Order

from .services import ORDER_EVENTS, order_notification_queue


def order_transitioned(sender, instance, target, **kwargs):
    template = ORDER_EVENTS.get(target)
    if template is None or instance.pk is None:
        return
    order_notification_queue(order=instance, template=template)


def connect():
    post_transition.connect(order_transitioned, sender=Order, dispatch_uid="notifications.order_transitioned")
