"""Whole-database checks that must always hold. Each returns violations as text.

Run by ``manage.py check_invariants`` and by the saga tests after every
scenario.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from catalog.models import ReservationStatus, StockLevel
from notifications.models import Notification, NotificationStatus
from payments.gateways import get_gateway
from payments.models import CHARGED, Payment, PaymentStatus
from shipping.carriers import get_carrier
from shipping.models import ShipmentStatus

from .models import ACTIVE_SAGA_STATUSES, Order, OrderStatus, SagaRun, SagaStatus

CONFIRMED_TEMPLATE, CANCELLED_TEMPLATE = "order_confirmed", "order_cancelled"


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
    return violations


def _cancelled_order_ids():
    return {
        str(public_id)
        for public_id in Order.objects.filter(status=OrderStatus.CANCELLED).values_list("public_id", flat=True)
    }


def _order_of(idempotency_key):
    """The order public id a saga's idempotency key starts with (``<order uuid>:<step>...``)."""
    return idempotency_key.partition(":")[0]


def cancelled_orders_are_settled_in_the_outside_world():
    """The gateway's and the carrier's own books, not only our rows (for adapters that can list them):
    every charge with a cancelled order's key prefix was refunded, every booking cancelled."""
    gateway_books, carrier_books = get_gateway().books(), get_carrier().books()
    if gateway_books is None and carrier_books is None:
        return []
    cancelled = _cancelled_order_ids()
    violations = []
    if gateway_books is not None:
        refunded = {key for key, kind in gateway_books if kind == "refund"}
        violations += [
            f"order {_order_of(key)}: cancelled but the gateway charge {key} was never refunded"
            for key, kind in sorted(gateway_books)
            if kind == "charge" and _order_of(key) in cancelled and f"{key}:refund" not in refunded
        ]
    if carrier_books is not None:
        violations += [
            f"order {_order_of(key)}: cancelled but the carrier booking {key} is still live"
            for key, booking_cancelled in sorted(carrier_books)
            if not booking_cancelled and _order_of(key) in cancelled
        ]
    return violations


def cancelled_orders_were_told_last():
    """An order that ended cancelled had no confirmation sent unless a cancellation notice was sent
    (or is queued) after it: the customer's last word about it is "cancelled"."""
    rows = Notification.objects.filter(
        order__status=OrderStatus.CANCELLED, template__in=[CONFIRMED_TEMPLATE, CANCELLED_TEMPLATE]
    ).values_list("order__public_id", "template", "status", "sent_at")
    confirmed, told = {}, {}
    for order_id, template, status, sent_at in rows:
        if template == CONFIRMED_TEMPLATE and status == NotificationStatus.SENT:
            confirmed[order_id] = sent_at
        elif template == CANCELLED_TEMPLATE and status in (NotificationStatus.QUEUED, NotificationStatus.SENT):
            told[order_id] = sent_at  # None while queued: it goes out later
    return [
        f"order {order_id}: cancelled, but its confirmation was sent and no cancellation notice after it"
        for order_id, sent_at in sorted(confirmed.items())
        if order_id not in told or (told[order_id] is not None and told[order_id] < sent_at)
    ]


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
    cancelled_orders_are_settled_in_the_outside_world,
    cancelled_orders_were_told_last,
    sagas_are_terminal_or_on_time,
]


def check_invariants():
    """Every violation across the database, as text (empty: all is well)."""
    return [violation for check in CHECKS for violation in check()]
