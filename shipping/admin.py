from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import Shipment


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = ["id", "order_link", "status", "carrier", "tracking_number", "created_at", "dispatched_at"]
    list_filter = ["status", "carrier", "created_at"]
    search_fields = ["tracking_number", "order__public_id"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Shipment._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="order")
    def order_link(self, obj):
        if obj.order_id is None:
            return "—"
        url = reverse("admin:orders_order_change", args=[obj.order_id])
        return format_html('<a href="{}">{}</a>', url, obj.order.public_id)

    def has_delete_permission(self, request, obj=None):
        return False
