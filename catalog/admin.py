from datetime import timedelta

from django.contrib import admin, messages
from django.utils import timezone

from orders.admin_links import OrderLinkMixin
from orders.services import HoldStillNeeded, reservation_release_by_staff

from .models import Product, Reservation, ReservationLine, ReservationStatus, StockLevel


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


class ReservationStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "Active"),
            ("expiring", "Expiring within 5 min"),
            ("overdue", "Past expiry, still held"),
            ("expired", "Expired"),
            ("released", "Released"),
            ("committed", "Committed (shipped)"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "expiring":
            return queryset.filter(
                status=ReservationStatus.ACTIVE, expires_at__gt=now, expires_at__lte=now + timedelta(minutes=5)
            )
        if value == "overdue":
            return queryset.filter(status=ReservationStatus.ACTIVE, expires_at__lte=now)
        if value in ("active", "expired", "released", "committed"):
            return queryset.filter(status=value)
        return queryset


@admin.register(Reservation)
class ReservationAdmin(OrderLinkMixin, admin.ModelAdmin):
    list_display = ["id", "order_link", "status", "expires_at", "created_at"]
    list_filter = [ReservationStateFilter, "created_at"]
    search_fields = ["=order__public_id", "order__customer__email"]
    readonly_fields = ["order", "status", "expires_at", "created_at", "updated_at"]
    list_select_related = ["order"]
    show_full_result_count = False
    inlines = [ReservationLineInline]
    actions = ["release"]

    @admin.action(description="Release the held stock (orders resolved by hand only)", permissions=["release"])
    def release(self, request, queryset):
        """Only a cancelled order's leftover hold; a live order's is refused (cancel the order instead)."""
        released = 0
        for reservation in queryset:
            try:
                done = reservation_release_by_staff(reservation=reservation)
            except HoldStillNeeded as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            if done:
                released += 1
            else:
                self.message_user(
                    request,
                    f"Reservation {reservation.pk} is {reservation.status}: nothing to release.",
                    messages.WARNING,
                )
        if released:
            self.message_user(request, f"Released {released} reservation(s).", messages.SUCCESS)

    def has_release_permission(self, request):
        return request.user.has_perm("catalog.release_reservation")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
