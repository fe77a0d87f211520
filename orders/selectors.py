from django.db.models import Prefetch, QuerySet

from .models import CANCELLABLE, Order, OrderStatus, SagaRun, SagaStatus, SagaStep


def order_list(*, customer=None, status=None) -> QuerySet[Order]:
    """Orders newest first; all of them when ``customer`` is None (staff)."""
    qs = Order.objects.all()
    if customer is not None:
        qs = qs.filter(customer=customer)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def order_detail_queryset(*, customer=None) -> QuerySet[Order]:
    """What the order detail shows, in a bounded number of queries."""
    return (
        order_list(customer=customer)
        .select_related("saga")
        .prefetch_related("lines", "shipments", Prefetch("saga__steps", queryset=SagaStep.objects.all()))
    )


def order_get(*, public_id, customer=None) -> Order:
    return order_detail_queryset(customer=customer).get(public_id=public_id)


def saga_list(*, status=None) -> QuerySet[SagaRun]:
    qs = SagaRun.objects.select_related("order").prefetch_related("steps").order_by("-updated_at", "-id")
    return qs.filter(status=status) if status else qs


def order_actions(order, user):
    """The staff actions allowed on ``order`` now and permitted to ``user``.

    Built on django-fsm: a transition is offered only if it can run from the
    current state and ``user`` holds its permission. ``confirm`` says whether it
    has side effects the user should confirm (all of them do).
    """
    saga = getattr(order, "saga", None)
    candidates = []
    if user.has_perm("orders.cancel_order") and order.status in CANCELLABLE:
        candidates.append(("cancel", "Cancel order", "Runs the compensations: refund, release stock, cancel shipment."))
    transitions = {t.name for t in order.get_available_user_status_transitions(user)}
    if "ship" in transitions and user.has_perm("orders.ship_order"):
        candidates.append(("ship", "Mark shipped", "Commits the stock; the customer gets the tracking number."))
    if "deliver" in transitions and user.has_perm("orders.deliver_order"):
        candidates.append(("deliver", "Mark delivered", "The customer is told the parcel arrived."))
    if saga is not None and user.has_perm("orders.retry_saga"):
        if saga.status == SagaStatus.FAILED or (saga.is_active and order.status != OrderStatus.COMPENSATING):
            candidates.append(("retry", "Retry saga", "Re-runs the saga from where it stopped."))
        if saga.status == SagaStatus.FAILED:
            if order.status == OrderStatus.NEEDS_ATTENTION:
                candidates.append(("compensate", "Compensate", "Undoes every step that ran; the order is cancelled."))
            if "resolve" in transitions:
                candidates.append(
                    ("resolve", "Mark resolved", "You settled it by hand; closes the order as cancelled.")
                )
    return [{"name": n, "label": label, "help": text, "needs_note": n == "resolve"} for n, label, text in candidates]


def dashboard_figures(*, now=None):
    """What the admin dashboard shows, from the read model and one indexed range query."""
    from datetime import timedelta

    from django.db.models import Count, Sum
    from django.db.models.functions import TruncHour
    from django.utils import timezone

    from .models import DailyOrderStats, OrderStatusCount, StepFailureStats

    now = now or timezone.now()
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    per_hour = dict(
        Order.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    hours = [start + timedelta(hours=i) for i in range(24)]
    counts = [per_hour.get(hour, 0) for hour in hours]
    peak = max(counts) or 1
    bar_width, height = 24, 120
    bars = [
        {
            "x": i * (bar_width + 4),
            "y": height - round(height * count / peak),
            "height": round(height * count / peak),
            "width": bar_width,
            "count": count,
            "label": hour.strftime("%H"),
        }
        for i, (hour, count) in enumerate(zip(hours, counts, strict=True))
    ]
    placed = DailyOrderStats.objects.aggregate(n=Sum("placed"))["n"] or 0
    return {
        "statuses": [(s.get_status_display(), s.status, s.count) for s in OrderStatusCount.objects.filter(count__gt=0)],
        "bars": bars,
        "chart_width": 24 * (bar_width + 4),
        "chart_height": height,
        "orders_last_24h": sum(counts),
        "failures": [
            {"step": f.step, "failures": f.failures, "rate": f.failures / placed if placed else 0}
            for f in StepFailureStats.objects.order_by("-failures")
        ],
        "needs_attention": Order.objects.filter(status=OrderStatus.NEEDS_ATTENTION).count(),
        "failed_sagas": SagaRun.objects.filter(status=SagaStatus.FAILED).count(),
    }


def order_stock_lines(order) -> list[tuple[int, int]]:
    """``[(product_id, quantity)]`` of an order, for the catalog to reserve (its loaded lines if any)."""
    return [(line.product_id, line.quantity) for line in order.lines.all()]
