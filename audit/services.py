"""Writing the audit trail. Rows are only ever inserted."""

from config import sql

from .context import current_actor
from .models import AuditEvent


def audit_record(
    *,
    obj=None,
    object_type="",
    object_id="",
    event,
    from_state="",
    to_state="",
    payload=None,
    order_id=None,
    batch=None,
):
    """Insert one audit event in the caller's transaction, with the current actor.

    With ``batch`` the INSERT is added to it (sent with the batch; ``pk`` stays None).
    """
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
    from config.observability import get_request_id

    actor_type, actor, label = current_actor()
    event = AuditEvent(
        request_id=get_request_id(),
        actor_type=actor_type,
        actor=actor,
        actor_label=label[:150],
        object_type=object_type,
        object_id=str(object_id),
        order_id=order_id,
        event=event,
        from_state=from_state or "",
        to_state=to_state or "",
        payload=payload or {},
    )
    # One prepared INSERT: every transition on the saga's path writes one.
    if batch is not None:
        batch.add(*sql.insert_statement(event, returning=False))
    else:
        sql.insert(event)
    return event
