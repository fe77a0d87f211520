"""Reads of payments."""

from django.db.models import QuerySet

from .models import Payment, PaymentStatus


def payments_not_refunded(*, order) -> QuerySet[Payment]:
    """The order's payments that still hold the customer's money (authorized or captured)."""
    return Payment.objects.filter(order=order, status__in=[PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED])


def payment_refunded(*, order, idempotency_key) -> bool:
    """Whether the charge made under ``idempotency_key`` is refunded in our books."""
    return Payment.objects.filter(order=order, idempotency_key=idempotency_key, status=PaymentStatus.REFUNDED).exists()
