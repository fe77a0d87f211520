from django.contrib import admin

from .models import Shipment


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "status", "carrier", "tracking_number", "created_at", "dispatched_at"]
    list_filter = ["status", "carrier", "created_at"]
    search_fields = ["tracking_number", "order__public_id"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Shipment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
