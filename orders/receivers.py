"""The analytics read model follows the orders, after each transaction commits."""

from django.db import transaction
from django.db.models.signals import post_save
from django_fsm.signals import post_transition

from . import analytics, signals
from .models import Order


def order_saved(sender, instance, created, **kwargs):
    if created:
        order_id = instance.pk
        transaction.on_commit(lambda: analytics.order_placed(order_id), robust=True)


def order_transitioned(sender, instance, source, target, **kwargs):
    if instance.pk is None or source == target:
        return
    order_id = instance.pk
    transaction.on_commit(lambda: analytics.order_moved(order_id, source, target), robust=True)


def saga_step_failed(sender, step=None, **kwargs):
    if step:
        analytics.step_failed(step)  # saga signals already arrive after commit


def connect():
    post_save.connect(order_saved, sender=Order, dispatch_uid="orders.analytics.order_saved")
    post_transition.connect(order_transitioned, sender=Order, dispatch_uid="orders.analytics.order_transitioned")
    signals.step_failed.connect(saga_step_failed, dispatch_uid="orders.analytics.step_failed")
