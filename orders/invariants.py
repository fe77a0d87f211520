"""Whole-database checks that must always hold. Each returns violations as text.

Run by ``manage.py check_invariants`` and by the saga tests after every
scenario.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from catalog.models import ReservationStatus, StockLevel
from payments.models import CHARGED, FakeGatewayCharge, Payment, PaymentStatus
from shipping.models import ShipmentStatus

from .models import ACTIVE_SAGA_STATUSES, Order, OrderStatus, SagaRun, SagaStatus


def stock_matches_reservations():
    """``reserved`` on every product equals the units of its active reservations."""
    levels = StockLevel.objects.select_related("product").annotate(
        held=Sum(
            "product__reservation_lines__quantity",
            filter=Q(product__reservation_lines__reservation__status=ReservationStatus.ACTIVE),
            default=0,
        )
    )
    return [
        f"stock: {level.product.sku} has reserved={level.reserved} but active reservations hold {level.held}"
        for level in levels
        if level.reserved != level.held
    ]


def shipped_orders_committed_their_stock():
    violations = []
    shipped = [OrderStatus.SHIPPED, OrderStatus.DELIVERED]
    for order in Order.objects.filter(status__in=shipped).exclude(reservation__status=ReservationStatus.COMMITTED):
        violations.append(f"order {order.public_id}: {order.status} but its reservation is not committed")
    for order in Order.objects.filter(reservation__status=ReservationStatus.COMMITTED).exclude(status__in=shipped):
        violations.append(f"order {order.public_id}: stock committed but the order is {order.status}")
    return violations


def no_order_charged_twice():
    violations = [
        f"order {row['order__public_id']}: {row['n']} charged payments"
        for row in Payment.objects.filter(status__in=CHARGED)
        .values("order__public_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    ]
    captured = Payment.objects.filter(status__in=CHARGED).select_related("order")
    violations += [
        f"order {p.order.public_id}: charged {p.amount} but the order total is {p.order.total}"
        for p in captured
        if p.amount != p.order.total
    ]
    return violations


def cancelled_orders_are_undone():
    """A cancelled order holds no stock, no live shipment and no money."""
    cancelled = Order.objects.filter(status=OrderStatus.CANCELLED)
    violations = [
        f"order {o.public_id}: cancelled but payment {p} was not refunded"
        for o in cancelled.filter(payments__status=PaymentStatus.CAPTURED).distinct()
        for p in o.payments.filter(status=PaymentStatus.CAPTURED)
    ]
    violations += [
        f"order {o.public_id}: cancelled but its reservation is still active"
        for o in cancelled.filter(reservation__status=ReservationStatus.ACTIVE)
    ]
    violations += [
        f"order {o.public_id}: cancelled but a shipment is still booked"
        for o in cancelled.filter(shipments__status=ShipmentStatus.CREATED).distinct()
    ]
    if settings.PAYMENT_GATEWAY == "payments.gateways.FakeGateway":
        # The gateway's own books: every charge for a cancelled order was refunded.
        for order in cancelled:
            prefix = f"{order.public_id}:"
            charges = FakeGatewayCharge.objects.filter(
                idempotency_key__startswith=prefix, kind="charge", succeeded=True
            )
            for charge in charges:
                refunded = FakeGatewayCharge.objects.filter(
                    idempotency_key=f"{charge.idempotency_key}:refund", kind="refund", succeeded=True
                ).exists()
                if not refunded:
                    violations.append(f"order {order.public_id}: gateway charge {charge.reference} never refunded")
    return violations


def sagas_are_terminal_or_on_time(now=None):
    now = now or timezone.now()
    grace = timedelta(seconds=settings.SAGA_REDRIVE_IDLE_SECONDS)
    violations = [
        f"saga {s.pk} (order {s.order.public_id}): still {s.status} {int((now - s.deadline_at).total_seconds())}s "
        "past its deadline"
        for s in SagaRun.objects.filter(status__in=ACTIVE_SAGA_STATUSES, deadline_at__lt=now - grace).select_related(
            "order"
        )
    ]
    expected = {
        SagaStatus.COMPLETED: [
            OrderStatus.CONFIRMED,
            OrderStatus.SHIPPED,
            OrderStatus.DELIVERED,
            OrderStatus.COMPENSATING,
        ],
        SagaStatus.COMPENSATED: [OrderStatus.CANCELLED],
        SagaStatus.FAILED: [OrderStatus.NEEDS_ATTENTION],
        SagaStatus.RESOLVED: [OrderStatus.CANCELLED],
    }
    for status, order_states in expected.items():
        for saga in (
            SagaRun.objects.filter(status=status).exclude(order__status__in=order_states).select_related("order")
        ):
            violations.append(f"saga {saga.pk}: {status} but order {saga.order.public_id} is {saga.order.status}")
    violations += [
        f"order {o.public_id}: has no saga" for o in Order.objects.filter(saga__isnull=True).only("public_id")
    ]
    return violations


CHECKS = [
    stock_matches_reservations,
    shipped_orders_committed_their_stock,
    no_order_charged_twice,
    cancelled_orders_are_undone,
    sagas_are_terminal_or_on_time,
]


def check_invariants():
    """Every violation across the database, as text (empty: all is well)."""
    return [violation for check in CHECKS for violation in check()]
