"""Stock operations. Every change to ``StockLevel`` goes through here.

Reserving never reads-then-writes: each line is one conditional UPDATE
(``reserved = reserved + q WHERE on_hand - reserved >= q``), taken in product-id
order so two orders never wait on each other's rows in opposite orders. On
PostgreSQL a concurrent UPDATE re-checks its WHERE clause after the row lock is
released, so the check and the write are one atomic step; the CHECK
constraints are the last line of defence.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import Product, Reservation, ReservationLine, ReservationStatus, StockLevel


class OutOfStock(Exception):
    def __init__(self, skus):
        self.skus = sorted(skus)
        super().__init__(f"Not enough stock for: {', '.join(self.skus)}")


def product_create(*, sku, name, price, on_hand=0, active=True, currency=None) -> Product:
    with transaction.atomic():
        product = Product.objects.create(
            sku=sku, name=name, price=price, active=active, currency=currency or settings.DEFAULT_CURRENCY
        )
        StockLevel.objects.create(product=product, on_hand=on_hand)
    return product


def stock_receive(*, product, quantity: int) -> None:
    """Goods arrived at the warehouse (or came back): ``on_hand`` goes up."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + quantity)


def _quantities_by_product(lines):
    quantities = defaultdict(int)
    for product_id, quantity in lines:
        quantities[product_id] += quantity
    return sorted(quantities.items())


@transaction.atomic
def stock_reserve(*, order, ttl_seconds=None) -> Reservation:
    """Hold the stock for every line of ``order``, all or nothing.

    Idempotent: an order that already has a reservation gets it back. Raises
    ``OutOfStock`` (and changes nothing) when any line cannot be covered.
    """
    existing = Reservation.objects.filter(order=order).first()
    if existing is not None:
        return existing

    quantities = _quantities_by_product(order.lines.values_list("product_id", "quantity"))
    short = []
    for product_id, quantity in quantities:
        updated = StockLevel.objects.filter(product_id=product_id, on_hand__gte=F("reserved") + quantity).update(
            reserved=F("reserved") + quantity
        )
        if not updated:
            short.append(product_id)
    if short:
        raise OutOfStock(Product.objects.filter(pk__in=short).values_list("sku", flat=True))

    ttl = settings.RESERVATION_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    reservation = Reservation.objects.create(order=order, expires_at=timezone.now() + timedelta(seconds=ttl))
    ReservationLine.objects.bulk_create(
        ReservationLine(reservation=reservation, product_id=product_id, quantity=quantity)
        for product_id, quantity in quantities
    )
    return reservation


def _lock_active(reservation_id):
    reservation = Reservation.objects.select_for_update().get(pk=reservation_id)
    if reservation.status != ReservationStatus.ACTIVE:
        return None, []
    return reservation, _quantities_by_product(reservation.lines.values_list("product_id", "quantity"))


@transaction.atomic
def reservation_release(*, reservation) -> bool:
    """Give the held units back. A no-op (returns False) unless it is active."""
    reservation, quantities = _lock_active(reservation.pk)
    if reservation is None:
        return False
    for product_id, quantity in quantities:
        StockLevel.objects.filter(product_id=product_id).update(reserved=F("reserved") - quantity)
    reservation.release()
    reservation.save(update_fields=["status", "updated_at"])
    return True


@transaction.atomic
def reservation_expire(*, reservation) -> bool:
    """Give the held units back because the hold ran out (see ``Reservation.expire``)."""
    reservation, quantities = _lock_active(reservation.pk)
    if reservation is None or not reservation.is_past_expiry():
        return False
    for product_id, quantity in quantities:
        StockLevel.objects.filter(product_id=product_id).update(reserved=F("reserved") - quantity)
    reservation.expire()
    reservation.save(update_fields=["status", "updated_at"])
    return True


@transaction.atomic
def reservation_commit(*, reservation) -> bool:
    """The goods left the warehouse: both ``on_hand`` and ``reserved`` go down."""
    reservation, quantities = _lock_active(reservation.pk)
    if reservation is None:
        return False
    for product_id, quantity in quantities:
        StockLevel.objects.filter(product_id=product_id).update(
            on_hand=F("on_hand") - quantity, reserved=F("reserved") - quantity
        )
    reservation.commit()
    reservation.save(update_fields=["status", "updated_at"])
    return True


def reservation_hold(*, order) -> None:
    """Keep the order's stock until it ships or is cancelled (the order is paid): one UPDATE."""
    Reservation.objects.filter(order=order, status=ReservationStatus.ACTIVE).update(
        expires_at=None, updated_at=timezone.now()
    )
