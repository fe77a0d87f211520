"""The order analytics read model: incremental updates and a rebuild from scratch.

Incremental updates run inside the transaction that changes the order, as
single-statement ``UPDATE … SET x = x + n`` on counter rows. ``rebuild`` recomputes every
figure from the orders and the audit trail; a test checks both agree.
"""

from datetime import timedelta
from decimal import Decimal
from functools import cache

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.models import AuditEvent

from .models import (
    REVENUE_STATES,
    DailyOrderStats,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusCount,
    ProductSalesStats,
    StepFailureStats,
)


@cache
def _add_sql(model, lookup_names, delta_names):
    qn = connection.ops.quote_name
    columns = {name: qn(model._meta.get_field(name).column) for name in (*lookup_names, *delta_names)}
    assignments = ", ".join(f"{columns[name]} = {columns[name]} + %s" for name in delta_names)
    where = " AND ".join(f"{columns[name]} = %s" for name in lookup_names)
    return f"UPDATE {qn(model._meta.db_table)} SET {assignments} WHERE {where}"


def _add(model, lookup, deltas):
    """``UPDATE model SET field = field + delta WHERE lookup`` as one prepared statement; returns the row count.

    On the saga's path every transition runs this: the statement text is built
    once per model and field list (see ``config/sql.py`` for why).
    """
    fields = model._meta
    values = [fields.get_field(name).get_db_prep_value(value, connection) for name, value in deltas.items()]
    values += [fields.get_field(name).get_db_prep_value(value, connection) for name, value in lookup.items()]
    with connection.cursor() as cursor:
        cursor.execute(_add_sql(model, tuple(lookup), tuple(deltas)), values)
        return cursor.rowcount


def _bump(model, lookup, **deltas):
    """``UPDATE model SET field = field + delta WHERE lookup``, creating the row first if needed."""
    if _add(model, lookup, deltas):
        return
    try:
        with transaction.atomic():
            model.objects.create(**lookup)
    except IntegrityError:
        pass  # created concurrently
    _add(model, lookup, deltas)


_MOVE_STATUS_SQL = (
    "UPDATE orders_orderstatuscount SET count = count + CASE WHEN status = %s THEN -1 ELSE 1 END "
    "WHERE status IN (%s, %s)"
)


def _move_status(source, target):
    """``source`` count - 1 and ``target`` count + 1 in one statement (rows locked in index order)."""
    with connection.cursor() as cursor:
        cursor.execute(_MOVE_STATUS_SQL, [source, source, target])
        updated = cursor.rowcount
    if updated < 2:  # a status never counted before: its row starts here
        present = set(OrderStatusCount.objects.filter(status__in=[source, target]).values_list("status", flat=True))
        for status, delta in ((source, -1), (target, 1)):
            if status not in present:
                _bump(OrderStatusCount, {"status": status}, count=delta)


def order_placed(order):
    _bump(DailyOrderStats, {"day": order.created_at.date(), "currency": order.currency}, placed=1)
    _bump(OrderStatusCount, {"status": OrderStatus.PENDING}, count=1)


def order_moved(order, source, target):
    _move_status(source, target)
    was, now = source in REVENUE_STATES, target in REVENUE_STATES
    day = {"day": order.created_at.date(), "currency": order.currency}
    if target == OrderStatus.CANCELLED:
        _bump(DailyOrderStats, day, cancelled=1)
    if was == now:
        return
    sign = 1 if now else -1
    _bump(DailyOrderStats, day, confirmed=sign, revenue=sign * order.total)
    lines = OrderLine.objects.filter(order_id=order.pk).values_list("product_id", "quantity", "line_total")
    for product_id, quantity, line_total in lines:
        _bump(ProductSalesStats, {"product_id": product_id}, units=sign * quantity, revenue=sign * line_total)


def step_failed(step):
    _bump(StepFailureStats, {"step": step}, failures=1)


@transaction.atomic
def rebuild():
    """Recompute every figure from the orders and the audit trail."""
    for model in (DailyOrderStats, OrderStatusCount, ProductSalesStats, StepFailureStats):
        model.objects.all().delete()
    days = {}
    for row in (
        Order.objects.annotate(day=TruncDate("created_at"))
        .values("day", "currency", "status")
        .annotate(n=Count("id"), total=Sum("total"))
    ):
        stats = days.setdefault(
            (row["day"], row["currency"]), DailyOrderStats(day=row["day"], currency=row["currency"])
        )
        stats.placed += row["n"]
        if row["status"] in REVENUE_STATES:
            stats.confirmed += row["n"]
            stats.revenue += row["total"]
        elif row["status"] == OrderStatus.CANCELLED:
            stats.cancelled += row["n"]
    DailyOrderStats.objects.bulk_create(days.values())
    counts = dict(Order.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    OrderStatusCount.objects.bulk_create(
        OrderStatusCount(status=status, count=counts.get(status, 0)) for status in OrderStatus.values
    )
    ProductSalesStats.objects.bulk_create(
        ProductSalesStats(product_id=row["product_id"], units=row["units"], revenue=row["revenue"])
        for row in OrderLine.objects.filter(order__status__in=REVENUE_STATES)
        .values("product_id")
        .annotate(units=Sum("quantity"), revenue=Sum("line_total"))
    )
    failures = {}
    for payload in AuditEvent.objects.filter(event="step_failed").values_list("payload", flat=True):
        step = (payload or {}).get("step")
        if step:
            failures[step] = failures.get(step, 0) + 1
    StepFailureStats.objects.bulk_create(StepFailureStats(step=s, failures=n) for s, n in failures.items())


def snapshot():
    """Every figure of the read model, comparable between incremental and rebuilt."""
    return {
        "days": sorted(
            (d.day, d.currency, d.placed, d.confirmed, d.cancelled, d.revenue)
            for d in DailyOrderStats.objects.all()
            if d.placed or d.confirmed or d.cancelled or d.revenue
        ),
        "statuses": sorted((s.status, s.count) for s in OrderStatusCount.objects.exclude(count=0)),
        "products": sorted(
            (p.product_id, p.units, p.revenue) for p in ProductSalesStats.objects.exclude(units=0, revenue=0)
        ),
        "failures": sorted((f.step, f.failures) for f in StepFailureStats.objects.exclude(failures=0)),
    }


def order_analytics(*, days=30, top=10):
    """The figures staff see: status breakdown, per-day totals, AOV, top products, failure rates."""
    since = timezone.now().date() - timedelta(days=days - 1)
    daily = list(DailyOrderStats.objects.filter(day__gte=since).order_by("-day", "currency"))
    placed = sum(d.placed for d in DailyOrderStats.objects.all())
    totals = {}
    for d in DailyOrderStats.objects.values("currency").annotate(confirmed=Sum("confirmed"), revenue=Sum("revenue")):
        totals[d["currency"]] = d
    return {
        "status_breakdown": {s.status: s.count for s in OrderStatusCount.objects.order_by("status") if s.count},
        "days": [
            {
                "day": d.day,
                "currency": d.currency,
                "placed": d.placed,
                "confirmed": d.confirmed,
                "cancelled": d.cancelled,
                "revenue": d.revenue,
            }
            for d in daily
        ],
        "average_order_value": {
            currency: (t["revenue"] / t["confirmed"]).quantize(Decimal("0.01")) if t["confirmed"] else Decimal("0.00")
            for currency, t in totals.items()
        },
        "top_products": [
            {"sku": p.product.sku, "name": p.product.name, "units": p.units, "revenue": p.revenue}
            for p in ProductSalesStats.objects.select_related("product").filter(units__gt=0).order_by("-units")[:top]
        ],
        "sagas_started": placed,
        "failure_rate_by_step": {
            f.step: {"failures": f.failures, "rate": round(f.failures / placed, 4) if placed else 0.0}
            for f in StepFailureStats.objects.order_by("step")
        },
    }
