from django.contrib import admin

from orders.admin_links import OrderLinkMixin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(OrderLinkMixin, admin.ModelAdmin):
    list_display = ["id", "template", "recipient", "status", "attempts", "order_link", "created_at", "sent_at"]
    list_filter = ["status", "template", "channel", "created_at"]
    search_fields = ["recipient", "order__public_id"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request):
        return False
