"""Reads of shipments."""

from django.db.models import QuerySet

from .models import Shipment, ShipmentStatus


def shipment_live(*, order) -> Shipment | None:
    """The order's parcel that is not cancelled (booked, dispatched or delivered), if any."""
    return Shipment.objects.filter(order=order).exclude(status=ShipmentStatus.CANCELLED).first()


def shipments_booked(*, order) -> QuerySet[Shipment]:
    """The order's parcels booked with the carrier and not cancelled (not yet dispatched either)."""
    return Shipment.objects.filter(order=order, status=ShipmentStatus.CREATED)
