"""Order events become customer emails, sent by a Celery task after commit.

A failing email backend never breaks or slows the saga: the receiver only
schedules a task, and only once the transaction that moved the order commits.
The order confirmation is the saga's own ``send_confirmation`` step.
"""

from django.db import transaction
from django_fsm.signals import post_transition

from orders.models import Order

from .services import ORDER_EVENTS


def order_transitioned(sender, instance, target, **kwargs):
    template = ORDER_EVENTS.get(target)
    if template is None or instance.pk is None:
        return
    from .tasks import notify_order

    order_id = instance.pk
    transaction.on_commit(lambda: notify_order.delay(order_id, template), robust=True)


def connect():
    post_transition.connect(order_transitioned, sender=Order, dispatch_uid="notifications.order_transitioned")
