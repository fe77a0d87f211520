"""The order analytics read model: incremental updates and a rebuild from scratch.

Incremental updates run inside the transaction that changes the order, as
``INSERT … ON CONFLICT DO UPDATE SET x = x + n`` on counter rows (one
statement per counter row, sent together). ``rebuild`` recomputes every
figure from the orders and the audit trail; a test checks both agree.
"""

from datetime import timedelta
from decimal import Decimal
from functools import cache

from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.models import AuditEvent
from config import sql

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
def _bump_sql(model, lookup_names, delta_names, rows=1):
    """``INSERT … ON CONFLICT (lookup) DO UPDATE SET x = x + excluded.x``: one statement, row or no row.

    Each inserted row carries its lookup, its deltas and zero for every other
    counter; ``rows`` rows are written in the order given. The text is built
    once per model and field list (see ``config/sql.py`` for why).
    """
    meta = model._meta
    counters = [f for f in meta.concrete_fields if not f.primary_key and f.name not in lookup_names]
    fields = [meta.get_field(name) for name in lookup_names] + counters
    table = sql.table(model)
    keys = ", ".join(sql.column(model, name) for name in lookup_names)
    assignments = ", ".join(
        f"{column} = {table}.{column} + excluded.{column}"
        for column in (sql.column(model, name) for name in delta_names)
    )
    columns = ", ".join(sql.column(model, f.name) for f in fields)
    values = ", ".join([f"({', '.join(['%s'] * len(fields))})"] * rows)
    text = f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT ({keys}) DO UPDATE SET {assignments}"
    return text, fields


def _bump_statement(model, rows):
    """(sql, params) adding ``deltas`` to each ``(lookup, deltas)`` row of ``rows``, all with the same fields."""
    lookup, deltas = rows[0]
    text, fields = _bump_sql(model, tuple(lookup), tuple(deltas), len(rows))
    params = []
    for lookup, deltas in rows:
        values = {**lookup, **deltas}
        params.extend(f.get_db_prep_value(values.get(f.name, 0), connection) for f in fields)
    return text, params


# Writers below send their statements in this order (one round trip: ``sql.Batch``)
# and take the counter rows in the same order (statuses, day, products), so two
# transactions never wait on each other's rows crosswise.


@cache
def _product_sales_sql():
    """Units and revenue of every product on an order, added to (or taken off) its sales row."""
    table = sql.table(ProductSalesStats)
    product, units, revenue = (sql.column(ProductSalesStats, name) for name in ("product", "units", "revenue"))
    line_product, quantity, line_total, order = (
        sql.column(OrderLine, name) for name in ("product", "quantity", "line_total", "order")
    )
    return (
        f"INSERT INTO {table} ({product}, {units}, {revenue}) "
        f"SELECT {line_product}, %s * SUM({quantity}), %s * SUM({line_total}) FROM {sql.table(OrderLine)} "
        f"WHERE {order} = %s GROUP BY {line_product} ORDER BY {line_product} "
        f"ON CONFLICT ({product}) DO UPDATE SET {units} = {table}.{units} + excluded.{units}, "
        f"{revenue} = {table}.{revenue} + excluded.{revenue}"
    )


def _day(order):
    return {"day": order.created_at.date(), "currency": order.currency}


def _write(statements, batch):
    """Send ``statements`` in this order: added to ``batch``, or in one round trip of their own."""
    own = batch if batch is not None else sql.Batch()
    for statement in statements:
        own.add(*statement)
    if batch is None:
        own.send()


def order_placed(order, *, batch=None):
    _write(
        [
            _bump_statement(OrderStatusCount, [({"status": OrderStatus.PENDING}, {"count": 1})]),
            _bump_statement(DailyOrderStats, [(_day(order), {"placed": 1})]),
        ],
        batch,
    )


def order_moved(order, source, target, *, batch=None):
    """Every figure a transition changes (it runs in every saga step); added to ``batch`` if given."""
    moves = sorted([(source, -1), (target, 1)])  # both rows in one statement, in status order
    statements = [_bump_statement(OrderStatusCount, [({"status": status}, {"count": n}) for status, n in moves])]
    day, sign = {}, 0
    if target == OrderStatus.CANCELLED:
        day["cancelled"] = 1
    if (source in REVENUE_STATES) != (target in REVENUE_STATES):
        sign = 1 if target in REVENUE_STATES else -1
        day.update(confirmed=sign, revenue=sign * order.total)
    if day:  # one statement for the row: a statement cannot change one row twice
        statements.append(_bump_statement(DailyOrderStats, [(_day(order), day)]))
    if sign:
        statements.append((_product_sales_sql(), [sign, sign, order.pk]))
    _write(statements, batch)


def step_failed(step):
    _write([_bump_statement(StepFailureStats, [({"step": step}, {"failures": 1})])], None)


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
