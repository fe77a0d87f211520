"""The back office: orders, sagas (and failed ones), with actions that call services."""

import uuid
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django_fsm import TransitionNotAllowed

from audit.selectors import audit_trail
from shipping.models import Shipment

from .admin_links import order_admin_link
from .models import FailedSaga, Order, OrderLine, OrderStatus, SagaRun, SagaStatus, SagaStep, StepKind, StepStatus
from .saga.recovery import SagaActionError, saga_compensate, saga_resolve, saga_retry
from .selectors import order_actions
from .services import OrderActionRefused, order_cancel, order_deliver, order_ship


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    raw_id_fields = ["product"]
    readonly_fields = ["product", "sku", "name", "unit_price", "quantity", "line_total"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class SagaStatusFilter(admin.SimpleListFilter):
    title = "saga status"
    parameter_name = "saga"

    def lookups(self, request, model_admin):
        return SagaStatus.choices

    def queryset(self, request, queryset):
        return queryset.filter(saga__status=self.value()) if self.value() else queryset


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Needs attention"), ("stuck", "Cancelling > 10 min")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=OrderStatus.NEEDS_ATTENTION)
        if self.value() == "stuck":
            since = timezone.now() - timedelta(minutes=10)
            return queryset.filter(status=OrderStatus.COMPENSATING, updated_at__lt=since)
        return queryset


class EstimatedCountPaginator(Paginator):
    """Counts exactly, except an unfiltered big table: PostgreSQL's estimate avoids a full COUNT(*)."""

    @cached_property
    def count(self):
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [query.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > 100_000:
                return row[0]
        return super().count


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["public_id", "status", "saga_status", "customer_email", "total", "currency", "created_at", "age"]
    list_filter = ["status", SagaStatusFilter, NeedsAttentionFilter, "created_at"]
    search_fields = ["public_id"]  # see get_search_results
    search_help_text = "Exact order id, customer email, sku or tracking number."
    list_select_related = ["customer", "saga"]
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    change_form_template = "admin/orders/order/change_form.html"
    fields = [
        "public_id",
        "status",
        "customer",
        "total",
        "currency",
        "customer_reason",
        "internal_note",
        "shipping_address_display",
        "idempotency_key",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [OrderLineInline]

    def get_search_results(self, request, queryset, search_term):
        """One indexed lookup chosen by the term's shape, never a scan of every order."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(public_id=uuid.UUID(term)), False
        except ValueError:
            pass
        if "@" in term:
            return queryset.filter(customer__email__iexact=term), False
        order_ids = (
            OrderLine.objects.filter(sku=term)
            .values("order_id")
            .union(Shipment.objects.filter(tracking_number=term).values("order_id"))
        )
        return queryset.filter(pk__in=order_ids), False

    @admin.display(description="saga", ordering="saga__status")
    def saga_status(self, order):
        return order.saga.get_status_display() if hasattr(order, "saga") else "—"

    @admin.display(description="customer", ordering="customer__email")
    def customer_email(self, order):
        return order.customer.email or order.customer.get_username()

    @admin.display(description="age")
    def age(self, order):
        seconds = int((timezone.now() - order.created_at).total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"

    @admin.display(description="reason given to the customer")
    def customer_reason(self, order):
        return order.cancel_reason or "—"

    @admin.display(description="internal note (resolved by hand; never shown to the customer)")
    def internal_note(self, order):
        """The operator's *Mark resolved* note, kept in the audit trail only."""
        event = audit_trail(order_id=order.public_id).filter(event="saga_resolved").last()
        return event.payload.get("note", "") if event is not None else "—"

    @admin.display(description="shipping address")
    def shipping_address_display(self, order):
        a = order.shipping_address
        parts = [a["name"], a["line1"], a["line2"], f"{a['postal_code']} {a['city']}", a["region"], a["country"]]
        return ", ".join(p for p in parts if p)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # every change goes through an action (a service), never through the form

    def has_delete_permission(self, request, obj=None):
        return False

    # --- the detail page ---------------------------------------------------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        order = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if order is not None:
            extra_context.update(self.detail_context(request, order))
        return super().change_view(request, object_id, form_url, extra_context)

    def detail_context(self, request, order):
        saga = SagaRun.objects.filter(order=order).prefetch_related("steps").first()
        return {
            "order": order,
            "actions": order_actions(order, request.user),
            "saga": saga,
            "saga_steps": sorted(saga.steps.all(), key=lambda s: (s.kind != StepKind.FORWARD, s.position))
            if saga
            else [],
            "reservation": getattr(order, "reservation", None),
            "payments": order.payments.prefetch_related("refunds"),
            "shipments": order.shipments.all(),
            "notifications": order.notifications.all(),
            "history": audit_trail(order_id=order.public_id),
        }

    def get_urls(self):
        return [
            path(
                "<path:object_id>/act/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="orders_order_act",
            ),
            *super().get_urls(),
        ]

    def action_view(self, request, object_id, action):
        """Run one of ``order_actions`` after confirmation (GET asks, POST does)."""
        order = get_object_or_404(Order, pk=object_id)
        available = {a["name"]: a for a in order_actions(order, request.user)}
        if action not in available:
            raise PermissionDenied
        back = reverse("admin:orders_order_change", args=[order.pk])
        if request.method != "POST":
            context = {
                **self.admin_site.each_context(request),
                "title": f"{available[action]['label']}: order {order.public_id}?",
                "order": order,
                "action": available[action],
                "opts": self.model._meta,
                "back": back,
            }
            return TemplateResponse(request, "admin/orders/order/confirm_action.html", context)
        note = request.POST.get("note", "").strip()
        try:
            outcome = perform(order, action, note)
        except (SagaActionError, OrderActionRefused, TransitionNotAllowed) as exc:
            self.message_user(request, f"Order {order.public_id}: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"Order {order.public_id}: {outcome}", messages.SUCCESS)
        return redirect(back)


def perform(order, action, note=""):
    if action == "cancel":
        return f"cancelling ({order_cancel(order=order, reason=note or 'Cancelled by our staff.').status})"
    if action == "ship":
        return f"shipped ({order_ship(order=order).status})"
    if action == "deliver":
        return f"delivered ({order_deliver(order=order).status})"
    if action == "retry":
        return saga_retry(order.saga.pk)
    if action == "compensate":
        return saga_compensate(order.saga.pk, reason=note or "Cancelled by our staff.")
    if action == "resolve":
        return saga_resolve(order.saga.pk, note=note)
    raise SagaActionError(f"Unknown action {action}.")


class SagaStepInline(admin.TabularInline):
    model = SagaStep
    extra = 0
    can_delete = False
    fields = ["kind", "position", "name", "status", "attempts", "deliveries", "started_at", "finished_at", "error"]
    readonly_fields = fields
    ordering = ["-kind", "position"]

    def has_add_permission(self, request, obj=None):
        return False


class SagaActionsMixin:
    actions = ["retry", "compensate"]

    def _each(self, request, queryset, action):
        for saga in queryset:
            try:
                outcome = action(saga)
            except (SagaActionError, TransitionNotAllowed) as exc:
                self.message_user(request, f"Saga {saga.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Saga {saga.pk}: {outcome}", messages.SUCCESS)

    @admin.action(description="Retry from the failed step (or re-drive)", permissions=["retry"])
    def retry(self, request, queryset):
        self._each(request, queryset, lambda saga: saga_retry(saga.pk))

    @admin.action(description="Give up and compensate (cancel the order)", permissions=["retry"])
    def compensate(self, request, queryset):
        self._each(request, queryset, lambda saga: saga_compensate(saga.pk, reason="Cancelled by our staff."))

    def has_retry_permission(self, request):
        return request.user.has_perm("orders.retry_saga")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="order", ordering="order__created_at")
    def order_link(self, saga):
        return order_admin_link(saga)


@admin.register(SagaRun)
class SagaRunAdmin(SagaActionsMixin, admin.ModelAdmin):
    list_display = ["id", "order_link", "status", "failure_reason", "redrives", "deadline_at", "updated_at"]
    list_filter = ["status", "definition", "cancel_requested", "created_at"]
    search_fields = ["=order__public_id", "error"]
    list_select_related = ["order"]
    show_full_result_count = False
    readonly_fields = [f.name for f in SagaRun._meta.fields]
    inlines = [SagaStepInline]


@admin.register(FailedSaga)
class FailedSagaAdmin(SagaActionsMixin, admin.ModelAdmin):
    """Sagas an operator must look at: failed, compensating too long, or past their deadline."""

    list_display = ["id", "order_link", "status", "failing_step", "error_summary", "updated_at", "deadline_at"]
    list_filter = ["status"]
    search_fields = ["=order__public_id", "error"]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in SagaRun._meta.fields]
    inlines = [SagaStepInline]
    actions = ["retry", "compensate", "resolve"]

    def get_queryset(self, request):
        now = timezone.now()
        stuck = now - timedelta(minutes=10)
        return (
            super()
            .get_queryset(request)
            .filter(
                Q(status=SagaStatus.FAILED)
                | Q(status=SagaStatus.COMPENSATING, updated_at__lt=stuck)
                | Q(status__in=[SagaStatus.PENDING, SagaStatus.RUNNING], deadline_at__lt=now)
            )
            .prefetch_related("steps")
        )

    @admin.display(description="failing step")
    def failing_step(self, saga):
        failed = [s for s in saga.steps.all() if s.status == StepStatus.FAILED]
        return ", ".join(f"{s.name} ({s.kind})" for s in failed) or "—"

    @admin.display(description="error")
    def error_summary(self, saga):
        return (saga.error or saga.failure_reason)[:200]

    @admin.action(description="Mark resolved (settled by hand; a note is required)", permissions=["retry"])
    def resolve(self, request, queryset):
        if "note" not in request.POST:
            context = {
                **self.admin_site.each_context(request),
                "title": "Mark sagas resolved",
                "sagas": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/orders/failedsaga/resolve.html", context)
        note = request.POST["note"].strip()
        if not note:
            self.message_user(request, "A note saying what was done by hand is required.", messages.ERROR)
            return None
        self._each(request, queryset, lambda saga: saga_resolve(saga.pk, note=note))
        return None
