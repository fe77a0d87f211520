from django.db.models import F, QuerySet

from .models import Product


def product_list(*, active_only=True) -> QuerySet[Product]:
    qs = Product.objects.select_related("stock").annotate(available=F("stock__on_hand") - F("stock__reserved"))
    return qs.filter(active=True) if active_only else qs
