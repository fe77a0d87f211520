from django.db.models import QuerySet

from .models import AuditEvent


def audit_trail(*, order_id) -> QuerySet[AuditEvent]:
    """Everything that happened to one order (by public id), oldest first."""
    return AuditEvent.objects.filter(order_id=order_id).order_by("created_at", "id")
