from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.selectors import audit_trail

from .models import Order, OrderLine, SagaRun, SagaStep
from .saga.recovery import SagaActionError, saga_compensate, saga_retry


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
        "history",
    ]
    inlines = [OrderLineInline]

    @admin.display(description="History (audit trail)")
    def history(self, order):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
            (
                (
                    e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    e.actor_label,
                    e.object_type,
                    e.object_id,
                    e.event,
                    e.from_state or "·",
                    e.to_state or "·",
                    (e.payload or {}).get("error", "") or (e.payload or {}).get("step", "") or "",
                )
                for e in audit_trail(order_id=order.public_id)
            ),
        )
        head = "<tr><th>When</th><th>Who</th><th>Object</th><th>Event</th><th>State</th><th>Detail</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), rows)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class SagaStepInline(admin.TabularInline):
    model = SagaStep
    extra = 0
    can_delete = False
    fields = ["kind", "position", "name", "status", "attempts", "deliveries", "started_at", "finished_at", "error"]
    readonly_fields = fields
    ordering = ["kind", "position"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(SagaRun)
class SagaRunAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "status", "failure_reason", "redrives", "deadline_at", "updated_at"]
    list_filter = ["status", "definition", "cancel_requested", "created_at"]
    search_fields = ["=order__public_id", "error"]
    list_select_related = ["order"]
    show_full_result_count = False
    readonly_fields = [f.name for f in SagaRun._meta.fields]
    inlines = [SagaStepInline]
    actions = ["retry", "compensate"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _each(self, request, queryset, action):
        for saga in queryset:
            try:
                outcome = action(saga)
            except SagaActionError as exc:
                self.message_user(request, f"Saga {saga.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Saga {saga.pk}: {outcome}", messages.SUCCESS)

    @admin.action(description="Retry from the failed step (or re-drive)", permissions=["retry"])
    def retry(self, request, queryset):
        self._each(request, queryset, lambda saga: saga_retry(saga.pk))

    @admin.action(description="Give up and compensate (cancel the order)", permissions=["retry"])
    def compensate(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda saga: saga_compensate(saga.pk, reason="Cancelled by our staff."),
        )

    def has_retry_permission(self, request):
        return request.user.has_perm("orders.retry_saga")
