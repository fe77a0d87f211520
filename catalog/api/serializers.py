from rest_framework import serializers

from catalog.models import Product
from config.api import QuerySerializer


class ProductSerializer(serializers.ModelSerializer):
    available = serializers.IntegerField(read_only=True, help_text="Units that can be ordered now.")
    in_stock = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "currency", "available", "in_stock"]
        read_only_fields = fields

    def get_in_stock(self, product) -> bool:
        return product.available > 0


class ProductQuerySerializer(QuerySerializer):
    ORDERINGS = ["sku", "-sku", "name", "-name", "price", "-price"]

    search = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Part of the sku or name."
    )
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    ordering = serializers.ChoiceField(choices=ORDERINGS, required=False, allow_blank=True, default="sku")
