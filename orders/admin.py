from django.contrib import admin

from .models import Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    raw_id_fields = ["product"]
    readonly_fields = ["product", "sku", "name", "unit_price", "quantity", "line_total"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["public_id", "customer", "status", "total", "currency", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["=public_id", "customer__email", "customer__username", "lines__sku"]
    list_select_related = ["customer"]
    raw_id_fields = ["customer"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = [
        "public_id",
        "customer",
        "status",
        "currency",
        "total",
        "idempotency_key",
        "request_fingerprint",
        "payment_token",
        "cancel_reason",
        "created_at",
        "updated_at",
    ]
    inlines = [OrderLineInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
