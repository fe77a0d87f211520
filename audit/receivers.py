"""Every state change and saga event becomes an audit event.

Transitions are recorded by a synchronous receiver, in the same transaction
as the change they describe: they commit or roll back together. Saga signals
arrive after commit and are recorded in their own transaction.
"""

from django_fsm.signals import post_transition

from orders import signals as saga_signals

from .services import audit_record


def _order_id(instance):
    if hasattr(instance, "public_id"):
        return instance.public_id
    order = getattr(instance, "order", None) if getattr(instance, "order_id", None) else None
    return order.public_id if order is not None else None


def transition_recorded(sender, instance, name, source, target, **kwargs):
    if instance.pk is None:  # an unsaved object: nothing persisted changed
        return
    payload = {}
    if kwargs.get("exception") is not None:
        payload["exception"] = repr(kwargs["exception"])
    audit_record(
        obj=instance,
        event=name,
        from_state=source,
        to_state=target,
        payload=payload,
        order_id=_order_id(instance),
        # A transition called with ``batch=`` (a ``config.sql.Batch``) sends its event with that batch.
        batch=(kwargs.get("method_kwargs") or {}).get("batch"),
    )


def saga_event_recorded(signal, sender, saga, order, step=None, error="", **kwargs):
    audit_record(
        obj=saga,
        event=SAGA_SIGNALS[signal],
        to_state=saga.status,
        payload={"step": step, "error": error[:2000]} if step or error else {},
        order_id=order.public_id,
    )


# Started and succeeded steps are already in the trail as the order's own
# transitions (mark_reserved, mark_paid, …) and in the saga's step rows; the
# trail records what an operator looks for: failures and how sagas ended.
SAGA_SIGNALS = {
    saga_signals.step_failed: "step_failed",
    saga_signals.saga_completed: "saga_completed",
    saga_signals.saga_compensated: "saga_compensated",
    saga_signals.saga_failed: "saga_failed",
}


def connect():
    from catalog.models import Reservation
    from notifications.models import Notification
    from payments.models import Payment
    from shipping.models import Shipment

    # An order's transitions are recorded by ``orders.transitions.order_move``, with the move.
    for model in (Reservation, Payment, Shipment, Notification):
        post_transition.connect(transition_recorded, sender=model, dispatch_uid=f"audit.transition.{model.__name__}")
    for signal, name in SAGA_SIGNALS.items():
        signal.connect(saga_event_recorded, dispatch_uid=f"audit.{name}")
