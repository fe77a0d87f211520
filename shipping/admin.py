from django.contrib import admin

from orders.admin_links import OrderLinkMixin

from .models import Shipment


@admin.register(Shipment)
class ShipmentAdmin(OrderLinkMixin, admin.ModelAdmin):
    list_display = ["id", "order_link", "status", "carrier", "tracking_number", "created_at", "dispatched_at"]
    list_filter = ["status", "carrier", "created_at"]
    search_fields = ["tracking_number", "order__public_id"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Shipment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
