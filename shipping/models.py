from django.db import models
from django.db.models import Q
from django_fsm import FSMField, FSMModelMixin, transition


class ShipmentStatus(models.TextChoices):
    CREATED = "created", "Created"
    DISPATCHED = "dispatched", "Dispatched"
    DELIVERED = "delivered", "Delivered"
    CANCELLED = "cancelled", "Cancelled"
    RETURN_REQUESTED = "return_requested", "Return requested"


class Shipment(FSMModelMixin, models.Model):
    """A parcel booked with the carrier for one order."""

    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="shipments")
    status = FSMField(
        max_length=20, choices=ShipmentStatus.choices, default=ShipmentStatus.CREATED, protected=True, db_index=True
    )
    carrier = models.CharField(max_length=64)
    tracking_number = models.CharField(max_length=64, blank=True, default="", db_index=True)
    idempotency_key = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one live shipment per order.
            models.UniqueConstraint(
                fields=["order"],
                condition=~Q(status=ShipmentStatus.CANCELLED),
                name="shipment_one_live_per_order",
            ),
        ]
        permissions = [
            ("dispatch_shipment", "Can mark a shipment dispatched"),
            ("cancel_shipment", "Can cancel a shipment by hand"),
        ]

    def __str__(self):
        return f"Shipment {self.tracking_number or self.pk} ({self.status})"

    def has_tracking_number(self):
        return bool(self.tracking_number)

    @transition(
        field=status,
        source=ShipmentStatus.CREATED,
        target=ShipmentStatus.DISPATCHED,
        conditions=[has_tracking_number],
        permission="shipping.dispatch_shipment",
    )
    def dispatch(self, when):
        self.dispatched_at = when

    @transition(field=status, source=ShipmentStatus.DISPATCHED, target=ShipmentStatus.DELIVERED)
    def deliver(self, when):
        self.delivered_at = when

    @transition(
        field=status,
        source=ShipmentStatus.CREATED,
        target=ShipmentStatus.CANCELLED,
        permission="shipping.cancel_shipment",
    )
    def cancel(self, when):
        self.cancelled_at = when

    @transition(field=status, source=ShipmentStatus.DISPATCHED, target=ShipmentStatus.RETURN_REQUESTED)
    def request_return(self, when):
        self.cancelled_at = when


class FakeCarrierBooking(models.Model):
    """What the bundled fake carrier remembers, keyed by idempotency key."""

    idempotency_key = models.CharField(max_length=128, unique=True)
    tracking_number = models.CharField(max_length=64, blank=True, default="")
    cancelled = models.BooleanField(default=False)
    succeeded = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.idempotency_key
