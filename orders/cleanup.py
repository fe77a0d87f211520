"""Retention: delete finished work's details in small batches.

Only what belongs to a *settled* order is touched: one that was delivered, or
cancelled (compensated, or resolved by an operator). An order that can still
change (confirmed and still cancellable, failed and waiting for an operator's
retry) keeps its saga steps, its ended reservation and its notifications: a
compensation, a retry or a redelivered step may still need them. Age counts
from the saga's finish and the order's last change, whichever is later.

Each batch is its own short transaction over at most ``batch_size`` primary
keys, so memory and lock time stay bounded on tables of millions of rows.
Audit events are deleted only when asked and never younger than
``AUDIT_RETENTION_DAYS``; the database refuses any other delete (see
``audit/migrations/0003_append_only.py``).
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditEvent
from catalog.models import Reservation, ReservationStatus
from notifications.models import Notification, NotificationStatus

from .models import Order, OrderStatus, SagaStatus, SagaStep

TERMINAL = [SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.RESOLVED]
# An order in one of these states can no longer change: nothing of it is needed again.
SETTLED = [OrderStatus.DELIVERED, OrderStatus.CANCELLED]


class RetentionError(Exception):
    pass


def settled_orders(*, cutoff):
    """Orders that can no longer change, settled (last changed) before ``cutoff``, with a finished saga."""
    return Order.objects.filter(
        status__in=SETTLED, updated_at__lt=cutoff, saga__status__in=TERMINAL, saga__finished_at__lt=cutoff
    )


def cleanup_targets(*, older_than):
    cutoff = timezone.now() - older_than
    settled = settled_orders(cutoff=cutoff).values("pk")
    return {
        "saga steps": SagaStep.objects.filter(saga__order__in=settled),
        # A notification of no order (or of one since deleted) belongs to nothing that can change.
        "sent notifications": Notification.objects.filter(status=NotificationStatus.SENT, sent_at__lt=cutoff).filter(
            Q(order__isnull=True) | Q(order__in=settled)
        ),
        "ended reservations": Reservation.objects.filter(
            status__in=[ReservationStatus.EXPIRED, ReservationStatus.RELEASED], updated_at__lt=cutoff, order__in=settled
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
        targets["audit events"] = AuditEvent.objects.filter(created_at__lt=timezone.now() - older_than)
    if dry_run:
        return {name: qs.count() for name, qs in targets.items()}
    return {
        name: _delete_in_batches(qs, batch_size, purge_audit=name == "audit events") for name, qs in targets.items()
    }
