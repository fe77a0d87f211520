"""Stock operations. Every change to ``StockLevel`` goes through here.

Reserving never reads-then-writes: each line is one conditional UPDATE
under row locks taken in product-id order, so two orders never wait on each
other's rows in opposite orders (``stock_reserve``). The catalog is given the
lines it reserves: it does not read the orders' tables. The CHECK constraints
are the last line of defence.
"""

from collections import defaultdict
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from config import sql

from .models import Product, Reservation, ReservationLine, ReservationStatus, StockLevel


class NoStockHeld(Exception):
    """The order holds no stock: its reservation ended (released, expired, committed) or no longer exists."""


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


def stock_reserve(*, order, lines, ttl_seconds=None) -> Reservation:
    """Hold the stock for ``lines`` (``[(product_id, quantity)]``) of ``order``, all or nothing.

    Idempotent: an order that already has a reservation gets it back. Raises
    ``OutOfStock`` (and changes nothing) when any line cannot be covered.
    One statement (``_reserve_sql``): it runs in every saga.
    """
    ttl = settings.RESERVATION_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl)
    quantities = _quantities_by_product(lines)
    params = {
        "order_id": order.pk,
        "product_ids": [product_id for product_id, _ in quantities],
        "quantities": [quantity for _, quantity in quantities],
        "status": ReservationStatus.ACTIVE,
        "expires_at": expires_at,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_reserve_sql(), params)
        existing_id, reservation_id, short = cursor.fetchone()
    if existing_id is not None:
        return Reservation.objects.get(pk=existing_id)
    if reservation_id is None:
        raise OutOfStock(short)
    reservation = Reservation(
        pk=reservation_id,
        order=order,
        status=ReservationStatus.ACTIVE,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    reservation._state.adding = False
    return reservation


@cache
def _reserve_sql():
    """``stock_reserve`` as one statement: no savepoint, one round trip.

    ``stock`` locks every line's stock row in product order (two orders never wait on
    each other's rows crosswise) and, having waited for a lock, sees the row as last
    committed (READ COMMITTED re-reads it); the UPDATE then changes the same locked
    rows. Nothing is written unless every line is covered and the order has no
    reservation yet. The writes touch different tables, and each reads only what the
    snapshot and the locks already show, so the order PostgreSQL runs them in does not matter.
    """
    t, c = sql.table, sql.column
    res, line, level, product = Reservation, ReservationLine, StockLevel, Product

    return f"""
WITH wanted AS (
  SELECT * FROM unnest(%(product_ids)s::bigint[], %(quantities)s::integer[]) AS w(product_id, quantity)
), existing AS (
  SELECT {c(res, "id")} AS id FROM {t(res)} WHERE {c(res, "order")} = %(order_id)s
), stock AS (
  SELECT s.{c(level, "product")} AS product_id,
         s.{c(level, "on_hand")} - s.{c(level, "reserved")} >= w.quantity AS enough
  FROM {t(level)} s JOIN wanted w ON w.product_id = s.{c(level, "product")}
  WHERE NOT EXISTS (SELECT 1 FROM existing)
  ORDER BY s.{c(level, "product")}
  FOR UPDATE OF s
), short AS (
  SELECT w.product_id FROM wanted w LEFT JOIN stock USING (product_id) WHERE stock.enough IS NOT TRUE
), held AS (
  UPDATE {t(level)} s SET {c(level, "reserved")} = s.{c(level, "reserved")} + w.quantity
  FROM wanted w
  WHERE s.{c(level, "product")} = w.product_id
    AND NOT EXISTS (SELECT 1 FROM existing) AND NOT EXISTS (SELECT 1 FROM short)
), reservation AS (
  INSERT INTO {t(res)} ({c(res, "order")}, {c(res, "status")}, {c(res, "expires_at")},
                                  {c(res, "created_at")}, {c(res, "updated_at")})
  SELECT %(order_id)s, %(status)s, %(expires_at)s, %(now)s, %(now)s
  WHERE NOT EXISTS (SELECT 1 FROM existing) AND NOT EXISTS (SELECT 1 FROM short)
  RETURNING {c(res, "id")} AS id
), lines AS (
  INSERT INTO {t(line)} ({c(line, "reservation")}, {c(line, "product")}, {c(line, "quantity")})
  SELECT reservation.id, wanted.product_id, wanted.quantity FROM reservation, wanted ORDER BY wanted.product_id
)
SELECT (SELECT id FROM existing), (SELECT id FROM reservation),
       ARRAY(SELECT p.{c(product, "sku")} FROM short
             JOIN {t(product)} p ON p.{c(product, "id")} = short.product_id)
"""


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


def reservation_still_overdue(*, reservation) -> bool:
    """Lock ``reservation`` and say whether it is still an active hold past its expiry.

    For a job that found it overdue earlier: a renewal or a payment (no expiry
    any more) may have committed since. Call inside the caller's transaction.
    """
    current = Reservation.objects.select_for_update().filter(pk=reservation.pk).first()
    return current is not None and current.status == ReservationStatus.ACTIVE and current.is_past_expiry()


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


@transaction.atomic
def reservation_renew(*, order, lines, paid=False) -> Reservation:
    """Hold the stock of ``order`` again after its hold ended: all or nothing, by ``stock_reserve``'s rule.

    For a saga that resumes after waiting for an operator: its hold may have
    expired, been released or deleted meanwhile. A committed reservation is
    returned as it is; an active one gets a fresh expiry (it may have run out
    without the beat having expired it yet, which would undo the retry at the
    next tick); an ended one is replaced by a new one. Raises ``OutOfStock``
    and changes nothing when the stock is gone. ``paid``: the hold does not
    expire (see ``reservation_hold``).
    """
    current = Reservation.objects.select_for_update().filter(order=order).first()
    if current is not None and current.status == ReservationStatus.COMMITTED:
        return current
    if current is not None and current.status == ReservationStatus.ACTIVE:
        current.expires_at = None if paid else timezone.now() + timedelta(seconds=settings.RESERVATION_TTL_SECONDS)
        current.save(update_fields=["expires_at", "updated_at"])
        return current
    if current is not None:
        current.delete()  # its transitions stay in the audit trail; the order has one reservation
    reservation = stock_reserve(order=order, lines=lines)
    if paid:
        reservation_hold(order=order)
        reservation.expires_at = None
    return reservation


@transaction.atomic
def order_stock_commit(*, order) -> Reservation:
    """The goods of ``order`` left the warehouse: commit its active reservation (lock the order first).

    Raises ``NoStockHeld`` (and changes nothing) when the order holds no stock: shipping
    it would take units that are free for other orders, selling them twice.
    """
    reservation = Reservation.objects.select_for_update().filter(order=order).first()
    if reservation is None:
        raise NoStockHeld("its reservation no longer exists")
    if not reservation_commit(reservation=reservation):
        raise NoStockHeld(f"its reservation is {reservation.status}")
    return reservation


def reservation_hold(*, order, batch=None) -> None:
    """Keep the order's stock until it ships or is cancelled (the order is paid): one UPDATE.

    Nobody reads its result: with ``batch`` (a saga's record) it goes out with the batch.
    """
    sql.write(*_hold_statement(order), batch=batch)


def _hold_statement(order):
    text = (
        f"UPDATE {sql.table(Reservation)} SET {sql.column(Reservation, 'expires_at')} = NULL, "
        f"{sql.column(Reservation, 'updated_at')} = %s "
        f"WHERE {sql.column(Reservation, 'order')} = %s AND {sql.column(Reservation, 'status')} = %s"
    )
    return text, [timezone.now(), order.pk, ReservationStatus.ACTIVE]
