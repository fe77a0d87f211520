"""Moving an order through its state machine: the one verb the saga, the admin and the API call.

``order_move`` runs the django-fsm transition (refused with ``TransitionNotAllowed``),
then writes, in the caller's transaction and in this order: the order's new state,
its audit event, and the analytics counters it changes. With ``batch`` the three
are added to it and go out with the batch (the saga's success record); without
one they are sent at once, in one round trip. Call it with the order row locked.

Receivers of django-fsm's ``post_transition`` still run (inside the transition
call): the notifications app queues the emails an order's state calls for.
"""

from audit.services import audit_record
from config import sql

from . import analytics
from .models import Order

# Every transition may change these: cancel_reason is set by start_compensation and resolve.
_MOVED_FIELDS = ("status", "cancel_reason", "updated_at")


def order_move(order: Order, transition: str, *args, batch=None) -> Order:
    """Call ``order.<transition>(*args)`` and record it: state, audit event, counters."""
    source = order.status
    getattr(order, transition)(*args)
    own = batch if batch is not None else sql.Batch()
    own.add(*sql.update_statement(order, _MOVED_FIELDS))
    audit_record(
        obj=order,
        event=transition,
        from_state=source,
        to_state=order.status,
        order_id=order.public_id,
        batch=own,
    )
    if order.status != source:
        analytics.order_moved(order, source, order.status, batch=own)
    if batch is None:
        own.send()
    return order
