from django.db import models
from django.db.models import Q
from django_fsm import FSMField, FSMModelMixin, transition


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    AUTHORIZED = "authorized", "Authorized"
    CAPTURED = "captured", "Captured"
    REFUNDED = "refunded", "Refunded"
    FAILED = "failed", "Failed"
    VOIDED = "voided", "Voided"


# A payment in one of these states holds (or held) the customer's money.
CHARGED = [PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED, PaymentStatus.REFUNDED]


class Payment(FSMModelMixin, models.Model):
    """A charge against the customer's payment method, through the gateway."""

    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = FSMField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, protected=True, db_index=True
    )
    gateway = models.CharField(max_length=64)
    gateway_reference = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=128, unique=True)
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            # The database refuses a second charge for the same order.
            models.UniqueConstraint(
                fields=["order"], condition=Q(status__in=CHARGED), name="payment_one_charge_per_order"
            ),
        ]
        permissions = [("refund_payment", "Can refund a payment by hand")]

    def __str__(self):
        return f"Payment {self.pk} {self.amount} {self.currency} ({self.status})"

    def refunded_amount(self):
        return sum((r.amount for r in self.refunds.all()), start=type(self.amount)(0))

    @transition(field=status, source=PaymentStatus.PENDING, target=PaymentStatus.AUTHORIZED)
    def authorize(self, reference=""):
        self.gateway_reference = reference or self.gateway_reference

    @transition(field=status, source=[PaymentStatus.PENDING, PaymentStatus.AUTHORIZED], target=PaymentStatus.CAPTURED)
    def capture(self, reference="", batch=None):
        """``batch``: the ``config.sql.Batch`` the audit event of this transition joins (``audit.receivers``)."""
        self.gateway_reference = reference or self.gateway_reference

    @transition(field=status, source=[PaymentStatus.PENDING, PaymentStatus.AUTHORIZED], target=PaymentStatus.FAILED)
    def fail(self, code="", message=""):
        self.failure_code = code[:64]
        self.failure_message = message[:255]

    @transition(field=status, source=PaymentStatus.AUTHORIZED, target=PaymentStatus.VOIDED)
    def void(self):
        pass

    @transition(
        field=status,
        source=PaymentStatus.CAPTURED,
        target=PaymentStatus.REFUNDED,
        permission="payments.refund_payment",
    )
    def refund(self):
        pass


class Refund(models.Model):
    """Money given back for a captured payment (append-only)."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    reason = models.CharField(max_length=255, blank=True, default="")
    gateway_reference = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive")]

    def __str__(self):
        return f"Refund {self.pk} {self.amount}"


class FakeGatewayCharge(models.Model):
    """What the bundled fake payment gateway remembers, keyed by idempotency key.

    It plays an external system: it is written outside the caller's transaction
    (the fake gateway refuses to be called inside one).
    """

    idempotency_key = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=16)  # "charge" or "refund"
    token = models.CharField(max_length=64, blank=True, default="")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=128, blank=True, default="")
    succeeded = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.kind} {self.idempotency_key}"
