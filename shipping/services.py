"""Shipment operations. Carrier calls happen outside database transactions."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from config import sql

from .carriers import get_carrier
from .models import Shipment, ShipmentStatus


def shipment_book(*, order, idempotency_key) -> str:
    """Book the parcel with the carrier (outside any transaction); returns the tracking number.

    Raises ``AddressRejected`` or ``CarrierUnavailable``.
    """
    parcels = [{"sku": line.sku, "quantity": line.quantity} for line in order.lines.all()]
    return get_carrier().book(idempotency_key=idempotency_key, address=order.shipping_address, parcels=parcels)


def shipment_record(*, order, idempotency_key, tracking_number) -> Shipment:
    """Record the booked parcel (idempotent on ``idempotency_key``): one INSERT, skipped if the key exists."""
    shipment = Shipment(
        order=order, carrier=get_carrier().name, tracking_number=tracking_number, idempotency_key=idempotency_key
    )
    if sql.insert(shipment, ignore_conflicts=True):
        return shipment
    try:
        return Shipment.objects.get(idempotency_key=idempotency_key)
    except Shipment.DoesNotExist:
        raise IntegrityError(f"order {order.pk} already has a live shipment under another key") from None


def shipment_create(*, order, idempotency_key) -> Shipment:
    """Book a parcel for ``order`` and record it. Raises ``AddressRejected`` or ``CarrierUnavailable``."""
    tracking_number = shipment_book(order=order, idempotency_key=idempotency_key)
    return shipment_record(order=order, idempotency_key=idempotency_key, tracking_number=tracking_number)


def shipment_cancel(*, order, idempotency_key=None) -> Shipment | None:
    """Cancel the order's parcel at the carrier and in our rows, or ask for a return once it left.

    Asks the carrier by key, not only our rows: ``idempotency_key`` is the key a booking was (or
    may have been) made with, and it is cancelled even when we hold no shipment for it (a booking
    whose answer was lost: a timeout after booking, a crash between booking and record), which
    also makes the carrier refuse a booking with it still on its way. The live shipment's own key
    is cancelled too. Idempotent: a cancelled (or returning) shipment stays as it is.
    """
    shipment = order.shipments.exclude(status=ShipmentStatus.CANCELLED).first()
    if shipment is not None and shipment.status != ShipmentStatus.CREATED:
        return _shipment_cancel_record(shipment)  # the parcel left: a return, not a cancelled booking
    keys = {idempotency_key, shipment.idempotency_key if shipment else None} - {None}
    carrier = get_carrier()
    for key in sorted(keys):
        carrier.cancel(idempotency_key=key)
    return _shipment_cancel_record(shipment) if shipment else None


def _shipment_cancel_record(shipment):
    with transaction.atomic():
        shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)
        now = timezone.now()
        if shipment.status == ShipmentStatus.CREATED:
            shipment.cancel(now)
        elif shipment.status == ShipmentStatus.DISPATCHED:
            shipment.request_return(now)
        else:
            return shipment
        shipment.save(update_fields=["status", "cancelled_at", "updated_at"])
    return shipment


def shipment_mark_dispatched(*, shipment) -> Shipment:
    """Record that the parcel left; call inside the caller's transaction."""
    shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)
    shipment.dispatch(timezone.now())
    shipment.save(update_fields=["status", "dispatched_at", "updated_at"])
    return shipment


def shipment_mark_delivered(*, shipment) -> Shipment:
    shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)
    shipment.deliver(timezone.now())
    shipment.save(update_fields=["status", "delivered_at", "updated_at"])
    return shipment
