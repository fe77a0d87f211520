import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_fsm import RETURN_VALUE, FSMField, FSMModelMixin, transition


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RESERVED = "reserved", "Stock reserved"
    PAID = "paid", "Paid"
    SHIPMENT_CREATED = "shipment_created", "Shipment created"
    CONFIRMED = "confirmed", "Confirmed"
    SHIPPED = "shipped", "Shipped"
    DELIVERED = "delivered", "Delivered"
    COMPENSATING = "compensating", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"


# States in which the fulfilment saga is still moving forward.
IN_PROGRESS = [OrderStatus.PENDING, OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.SHIPMENT_CREATED]
# States from which the order can still be cancelled (goods not shipped yet).
CANCELLABLE = [*IN_PROGRESS, OrderStatus.CONFIRMED]
# What the customer is told when an operator resolves an order (settled it by hand
# and closed it): the operator's own note stays in the audit trail.
RESOLVED_REASON = "Our staff cancelled your order and settled it by hand. Any payment taken for it has been refunded."


class Order(FSMModelMixin, models.Model):
    """An order placed by a storefront for one customer.

    ``status`` is a protected state machine: it changes only through the
    transition methods below, called by ``orders.services`` and the saga.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    status = FSMField(max_length=20, choices=OrderStatus.choices, default=OrderStatus.PENDING, protected=True)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    payment_token = models.CharField(max_length=64)

    shipping_name = models.CharField(max_length=200)
    shipping_line1 = models.CharField(max_length=200)
    shipping_line2 = models.CharField(max_length=200, blank=True, default="")
    shipping_city = models.CharField(max_length=100)
    shipping_region = models.CharField(max_length=100, blank=True, default="")
    shipping_postal_code = models.CharField(max_length=20)
    shipping_country = models.CharField(max_length=2)

    cancel_reason = models.CharField(max_length=255, blank=True, default="")
    request_id = models.CharField(max_length=128, blank=True, default="", db_index=True, help_text="X-Request-ID")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="order_status_created_idx"),
            models.Index(fields=["customer", "-created_at"], name="order_customer_created_idx"),
            models.Index(fields=["-created_at"], name="order_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(total__gte=0), name="order_total_non_negative"),
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="order_idempotency_key_unique_per_customer",
            ),
        ]
        permissions = [
            ("ship_order", "Can mark an order shipped"),
            ("deliver_order", "Can mark an order delivered"),
            ("cancel_order", "Can cancel an order on a customer's behalf"),
        ]

    def __str__(self):
        return f"Order {self.public_id}"

    @property
    def shipping_address(self):
        return {
            "name": self.shipping_name,
            "line1": self.shipping_line1,
            "line2": self.shipping_line2,
            "city": self.shipping_city,
            "region": self.shipping_region,
            "postal_code": self.shipping_postal_code,
            "country": self.shipping_country,
        }

    # --- the fulfilment saga moves the order forward ---------------------------
    @transition(field=status, source=OrderStatus.PENDING, target=OrderStatus.RESERVED)
    def mark_reserved(self):
        pass

    @transition(field=status, source=OrderStatus.RESERVED, target=OrderStatus.PAID)
    def mark_paid(self):
        pass

    @transition(field=status, source=OrderStatus.PAID, target=OrderStatus.SHIPMENT_CREATED)
    def mark_shipment_created(self):
        pass

    @transition(field=status, source=OrderStatus.SHIPMENT_CREATED, target=OrderStatus.CONFIRMED)
    def confirm(self):
        pass

    # --- staff move it after the saga -------------------------------------------
    @transition(field=status, source=OrderStatus.CONFIRMED, target=OrderStatus.SHIPPED, permission="orders.ship_order")
    def ship(self):
        pass

    @transition(
        field=status, source=OrderStatus.SHIPPED, target=OrderStatus.DELIVERED, permission="orders.deliver_order"
    )
    def deliver(self):
        pass

    # --- the failure path -------------------------------------------------------
    @transition(
        field=status,
        source=[*CANCELLABLE, OrderStatus.NEEDS_ATTENTION],
        target=OrderStatus.COMPENSATING,
        permission="orders.cancel_order",
    )
    def start_compensation(self, reason=""):
        if reason:
            self.cancel_reason = reason[:255]

    @transition(field=status, source=OrderStatus.COMPENSATING, target=OrderStatus.CANCELLED)
    def cancel(self):
        pass

    @transition(field=status, source=[*CANCELLABLE, OrderStatus.COMPENSATING], target=OrderStatus.NEEDS_ATTENTION)
    def flag_for_attention(self):
        """A compensation failed for good, or a step kept crashing: an operator must act."""

    @transition(
        field=status,
        source=OrderStatus.NEEDS_ATTENTION,
        target=RETURN_VALUE(*IN_PROGRESS),
        permission="orders.retry_saga",
    )
    def resume(self, state):
        """An operator retries the saga: back to the state of its last completed step."""
        return state

    @transition(
        field=status,
        source=OrderStatus.NEEDS_ATTENTION,
        target=OrderStatus.CANCELLED,
        permission="orders.retry_saga",
    )
    def resolve(self):
        """An operator settled the order by hand (refunded, restocked…) and closes it.

        The customer is told ``RESOLVED_REASON``; the operator's note is not the
        order's: ``saga_resolve`` keeps it in the audit trail.
        """
        self.cancel_reason = RESOLVED_REASON


class OrderLine(models.Model):
    """One product on an order; sku, name and unit price are copied at order time."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="order_lines")
    sku = models.CharField(max_length=64, db_index=True)
    name = models.CharField(max_length=200)
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    quantity = models.PositiveIntegerField()
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_line_quantity_positive"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="order_line_unit_price_non_negative"),
            models.UniqueConstraint(fields=["order", "product"], name="order_line_unique_product"),
        ]

    def __str__(self):
        return f"{self.quantity} × {self.sku}"


class SagaStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPENSATING = "compensating", "Compensating"
    COMPLETED = "completed", "Completed"
    COMPENSATED = "compensated", "Compensated"
    FAILED = "failed", "Failed"
    RESOLVED = "resolved", "Resolved by an operator"


ACTIVE_SAGA_STATUSES = [SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING]


class SagaRun(models.Model):
    """The durable state of one order's fulfilment saga.

    The database is the source of truth; Celery chains only carry the next
    step. ``updated_at`` moves whenever a step starts or finishes, so an idle
    saga is one whose ``updated_at`` is old (see ``orders.saga.recovery``).
    """

    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="saga")
    definition = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=SagaStatus.choices, default=SagaStatus.PENDING)
    cancel_requested = models.BooleanField(default=False)
    failure_reason = models.CharField(max_length=255, blank=True, default="", help_text="Safe to show customers.")
    error = models.TextField(blank=True, default="", help_text="For operators.")
    deadline_at = models.DateTimeField()
    redrives = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="saga_status_updated_idx"),
            models.Index(fields=["status", "deadline_at"], name="saga_status_deadline_idx"),
        ]
        permissions = [("retry_saga", "Can retry or compensate a saga")]

    def __str__(self):
        return f"Saga {self.pk} for order {self.order_id} ({self.status})"

    @property
    def is_active(self):
        return self.status in ACTIVE_SAGA_STATUSES


class FailedSaga(SagaRun):
    """The admin's view of sagas that need an operator (see ``FailedSagaAdmin``)."""

    class Meta:
        proxy = True
        verbose_name = "failed saga"


class StepKind(models.TextChoices):
    FORWARD = "forward", "Step"
    COMPENSATION = "compensation", "Compensation"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class SagaStep(models.Model):
    """One step (or compensation) of a saga: its log line in the database."""

    saga = models.ForeignKey(SagaRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Times the action was tried.")
    deliveries = models.PositiveIntegerField(default=0, help_text="Times a task message for it was taken.")
    task_id = models.CharField(max_length=64, blank=True, default="", help_text="The task running it now.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-kind", "position"]  # forward steps first
        constraints = [
            models.UniqueConstraint(fields=["saga", "kind", "name"], name="saga_step_unique_name"),
        ]

    def __str__(self):
        return f"{self.name} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


# --- the analytics read model ------------------------------------------------------
# Kept up to date by orders/receivers.py from signals, rebuilt from scratch by
# ``manage.py rebuild_read_models``; both give the same figures.
REVENUE_STATES = [OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED]


class DailyOrderStats(models.Model):
    """Per day of placement and currency: orders placed, confirmed (still), cancelled, revenue."""

    day = models.DateField()
    currency = models.CharField(max_length=3)
    placed = models.IntegerField(default=0)
    confirmed = models.IntegerField(default=0, help_text="Orders of this day now confirmed, shipped or delivered.")
    cancelled = models.IntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta:
        ordering = ["-day", "currency"]
        constraints = [models.UniqueConstraint(fields=["day", "currency"], name="daily_stats_unique_day")]
        verbose_name_plural = "daily order stats"

    def __str__(self):
        return f"{self.day} {self.currency}: {self.placed} placed"


class OrderStatusCount(models.Model):
    status = models.CharField(max_length=20, choices=OrderStatus.choices, unique=True)
    count = models.IntegerField(default=0)

    def __str__(self):
        return f"{self.status}: {self.count}"


class ProductSalesStats(models.Model):
    """Units and revenue of a product in orders now confirmed, shipped or delivered."""

    product = models.OneToOneField("catalog.Product", on_delete=models.CASCADE, related_name="sales_stats")
    units = models.IntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta:
        verbose_name_plural = "product sales stats"

    def __str__(self):
        return f"{self.product_id}: {self.units} units"


class StepFailureStats(models.Model):
    """How often each saga step (or compensation) failed for good."""

    step = models.CharField(max_length=64, unique=True)
    failures = models.IntegerField(default=0)

    class Meta:
        verbose_name_plural = "step failure stats"

    def __str__(self):
        return f"{self.step}: {self.failures}"
