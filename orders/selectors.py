from django.db.models import Prefetch, QuerySet

from .models import Order, SagaRun, SagaStep


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
