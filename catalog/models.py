from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, default=settings.DEFAULT_CURRENCY)
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_non_negative"),
        ]

    def __str__(self):
        return f"{self.sku} — {self.name}"


class StockLevel(models.Model):
    """How many units are on hand and how many of them are held for orders.

    The database itself refuses an oversold state: ``0 <= reserved <= on_hand``.
    Change it only through ``catalog.services`` (conditional UPDATEs).
    """

    product = models.OneToOneField(Product, primary_key=True, on_delete=models.CASCADE, related_name="stock")
    on_hand = models.IntegerField(default=0)
    reserved = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(on_hand__gte=0), name="stock_on_hand_non_negative"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="stock_reserved_non_negative"),
            models.CheckConstraint(condition=Q(reserved__lte=F("on_hand")), name="stock_reserved_within_on_hand"),
        ]

    def __str__(self):
        return f"{self.product_id}: {self.available} available ({self.on_hand} on hand, {self.reserved} reserved)"

    @property
    def available(self):
        return self.on_hand - self.reserved


class ReservationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    COMMITTED = "committed", "Committed"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class Reservation(FSMModelMixin, models.Model):
    """Units of stock held for one order.

    ``active`` holds ``reserved`` units; ``committed`` means the goods left the
    warehouse (on_hand went down); ``released`` and ``expired`` gave them back.
    ``expires_at`` is cleared once the order is paid: a paid order keeps its
    stock until it ships or is cancelled.
    """

    order = models.OneToOneField("orders.Order", on_delete=models.PROTECT, related_name="reservation")
    status = FSMField(
        max_length=16,
        choices=ReservationStatus.choices,
        default=ReservationStatus.ACTIVE,
        protected=True,
        db_index=True,
    )
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("release_reservation", "Can release a reservation by hand")]

    def __str__(self):
        return f"Reservation {self.pk} ({self.status})"

    def is_past_expiry(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @transition(field=status, source=ReservationStatus.ACTIVE, target=ReservationStatus.COMMITTED)
    def commit(self):
        """The goods were dispatched."""

    @transition(
        field=status,
        source=ReservationStatus.ACTIVE,
        target=ReservationStatus.RELEASED,
        permission="catalog.release_reservation",
    )
    def release(self):
        """The order no longer needs the stock."""

    @transition(
        field=status, source=ReservationStatus.ACTIVE, target=ReservationStatus.EXPIRED, conditions=[is_past_expiry]
    )
    def expire(self):
        """The hold ran out before the order was paid."""


class ReservationLine(models.Model):
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reservation_lines")
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="reservation_line_quantity_positive"),
            models.UniqueConstraint(fields=["reservation", "product"], name="reservation_line_unique_product"),
        ]

    def __str__(self):
        return f"{self.quantity} × {self.product_id}"
