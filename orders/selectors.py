from django.db.models import QuerySet

from .models import Order


def order_list(*, customer=None, status=None) -> QuerySet[Order]:
    qs = Order.objects.all()
    if customer is not None:
        qs = qs.filter(customer=customer)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def order_get(*, public_id, customer=None) -> Order:
    qs = order_list(customer=customer).prefetch_related("lines")
    return qs.get(public_id=public_id)
