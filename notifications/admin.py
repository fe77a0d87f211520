from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["id", "template", "recipient", "status", "attempts", "order_link", "created_at", "sent_at"]
    list_filter = ["status", "template", "channel", "created_at"]
    search_fields = ["recipient", "order__public_id"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="order")
    def order_link(self, obj):
        if obj.order_id is None:
            return "—"
        url = reverse("admin:orders_order_change", args=[obj.order_id])
        return format_html('<a href="{}">{}</a>', url, obj.order.public_id)
