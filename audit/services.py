"""Writing the audit trail. Rows are only ever inserted."""

from .models import ActorType, AuditEvent


def audit_record(
    *, obj=None, object_type="", object_id="", event, from_state="", to_state="", payload=None, actor=None
):
    """Insert one audit event in the caller's transaction.

    ``actor`` is a user (staff or customer) or None for the system.
    """
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
    if actor is None:
        actor_type, label = ActorType.SYSTEM, "system"
    else:
        actor_type = ActorType.STAFF if actor.is_staff else ActorType.CUSTOMER
        label = actor.get_username()
    return AuditEvent.objects.create(
        actor_type=actor_type,
        actor=actor,
        actor_label=label,
        object_type=object_type,
        object_id=str(object_id),
        event=event,
        from_state=from_state or "",
        to_state=to_state or "",
        payload=payload or {},
    )
