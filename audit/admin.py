from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the trail is append-only."""

    list_display = [
        "created_at",
        "actor_type",
        "actor_label",
        "object_type",
        "object_id",
        "event",
        "from_state",
        "to_state",
    ]
    list_filter = ["actor_type", "object_type", "event", "created_at"]
    search_fields = ["=object_id", "actor_label", "event"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
