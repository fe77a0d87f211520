from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets

from catalog.selectors import product_list
from config.api_views import COMMON_ERRORS, error

from .serializers import ProductQuerySerializer, ProductSerializer


@extend_schema(tags=["catalog"])
class ProductViewSet(viewsets.ReadOnlyModelViewSet):
    """Active products with their price and the quantity available now."""

    serializer_class = ProductSerializer
    lookup_field = "sku"
    lookup_value_regex = r"[^/\x00]+"  # PostgreSQL text holds no NUL: such a sku is a 404, not a DataError
    throttle_scope = "products"

    def get_queryset(self):
        qs = product_list(active_only=True)
        if self.action != "list":
            return qs
        params = ProductQuerySerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data
        if query.get("search"):
            qs = qs.filter(Q(sku__icontains=query["search"]) | Q(name__icontains=query["search"]))
        if query.get("in_stock") is True:
            qs = qs.filter(available__gt=0)
        elif query.get("in_stock") is False:
            qs = qs.filter(available__lte=0)
        return qs.order_by(query.get("ordering") or "sku", "pk")

    @extend_schema(
        parameters=[ProductQuerySerializer],
        responses={
            200: ProductSerializer(many=True),
            400: error("Bad query parameter."),
            404: error("No such page."),
            **COMMON_ERRORS,
        },
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: ProductSerializer, 404: error("No active product with this sku."), **COMMON_ERRORS})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)
