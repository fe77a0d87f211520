from django.contrib import admin

from orders.admin_links import OrderLinkMixin

from .models import Payment, Refund


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    readonly_fields = ["amount", "reason", "gateway_reference", "idempotency_key", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(OrderLinkMixin, admin.ModelAdmin):
    list_display = ["id", "order_link", "amount", "currency", "status", "gateway", "gateway_reference", "created_at"]
    list_filter = ["status", "gateway", "created_at"]
    search_fields = ["order__public_id", "gateway_reference", "idempotency_key"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Payment._meta.fields]
    inlines = [RefundInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Refund)
class RefundAdmin(admin.ModelAdmin):
    list_display = ["id", "payment", "amount", "reason", "gateway_reference", "created_at"]
    search_fields = ["payment__order__public_id", "gateway_reference"]
    list_select_related = ["payment"]
    readonly_fields = [f.name for f in Refund._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
