"""The analytics read model follows the orders, in the same transaction as each change.

A placed order is counted here (``post_save``); a transition is counted by
``orders.transitions.order_move``, with the transition's own writes.

Synchronous on purpose: the figures commit (or roll back) with the change, so
they can never drift from the orders; each update is one statement on a
counter row, so the row is locked only until that transaction commits.
"""

from django.db.models.signals import post_save

from . import analytics, signals
from .models import Order


def order_saved(sender, instance, created, **kwargs):
    if created:
        analytics.order_placed(instance)


def saga_step_failed(sender, step=None, **kwargs):
    if step:
        analytics.step_failed(step)  # saga signals arrive after commit: one statement of its own


def connect():
    post_save.connect(order_saved, sender=Order, dispatch_uid="orders.analytics.order_saved")
    signals.step_failed.connect(saga_step_failed, dispatch_uid="orders.analytics.step_failed")
