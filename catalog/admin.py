from django.contrib import admin

from .models import Product, Reservation, ReservationLine, StockLevel


class StockLevelInline(admin.StackedInline):
    model = StockLevel
    can_delete = False
    readonly_fields = ["reserved", "updated_at"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "currency", "active", "on_hand", "reserved"]
    list_filter = ["active", "currency"]
    search_fields = ["sku", "name"]
    list_select_related = ["stock"]
    inlines = [StockLevelInline]

    @admin.display(ordering="stock__on_hand")
    def on_hand(self, obj):
        return obj.stock.on_hand

    @admin.display(ordering="stock__reserved")
    def reserved(self, obj):
        return obj.stock.reserved


@admin.register(StockLevel)
class StockLevelAdmin(admin.ModelAdmin):
    list_display = ["product", "on_hand", "reserved", "available", "updated_at"]
    search_fields = ["product__sku", "product__name"]
    list_select_related = ["product"]
    readonly_fields = ["product", "reserved", "updated_at"]

    def has_add_permission(self, request):
        return False


class ReservationLineInline(admin.TabularInline):
    model = ReservationLine
    extra = 0
    raw_id_fields = ["product"]
    readonly_fields = ["product", "quantity"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "status", "expires_at", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["order__public_id", "order__customer__email"]
    raw_id_fields = ["order"]
    readonly_fields = ["order", "status", "expires_at", "created_at", "updated_at"]
    list_select_related = ["order"]
    inlines = [ReservationLineInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
