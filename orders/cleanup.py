"""Retention: delete finished work's details in small batches.

Each batch is its own short transaction over at most ``batch_size`` primary
keys, so memory and lock time stay bounded on tables of millions of rows.
Audit events are deleted only when asked and never younger than
``AUDIT_RETENTION_DAYS``; the database refuses any other delete (see
``audit/migrations/0003_append_only.py``).
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from catalog.models import Reservation, ReservationStatus
from notifications.models import Notification, NotificationStatus

from .models import SagaStatus, SagaStep

TERMINAL = [SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.RESOLVED]


class RetentionError(Exception):
    pass


def cleanup_targets(*, older_than):
    cutoff = timezone.now() - older_than
    return {
        "saga steps": SagaStep.objects.filter(saga__status__in=TERMINAL, saga__finished_at__lt=cutoff),
        "sent notifications": Notification.objects.filter(status=NotificationStatus.SENT, sent_at__lt=cutoff),
        "ended reservations": Reservation.objects.filter(
            status__in=[ReservationStatus.EXPIRED, ReservationStatus.RELEASED], updated_at__lt=cutoff
        ),
    }


def _delete_in_batches(queryset, batch_size, *, purge_audit=False):
    deleted = 0
    model = queryset.model
    while True:
        with transaction.atomic():
            if purge_audit:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL audit.allow_purge = 'on'")
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted
            model.objects.filter(pk__in=ids).delete()
            deleted += len(ids)


def cleanup(*, older_than, include_audit=False, dry_run=False, batch_size=1000) -> dict:
    """Delete (or, with ``dry_run``, count) what is older than ``older_than``. Returns counts."""
    targets = cleanup_targets(older_than=older_than)
    if include_audit:
        retention = timedelta(days=settings.AUDIT_RETENTION_DAYS)
        if older_than < retention:
            raise RetentionError(
                f"Audit events are kept {settings.AUDIT_RETENTION_DAYS} days (AUDIT_RETENTION_DAYS): "
                f"use --older-than {settings.AUDIT_RETENTION_DAYS}d or more."
            )
        if connection.vendor != "postgresql":
            raise RetentionError("Deleting audit events needs PostgreSQL (SQLite's trigger refuses every delete).")
        targets["audit events"] = AuditEvent.objects.filter(created_at__lt=timezone.now() - older_than)
    if dry_run:
        return {name: qs.count() for name, qs in targets.items()}
    return {
        name: _delete_in_batches(qs, batch_size, purge_audit=name == "audit events") for name, qs in targets.items()
    }
