"""Carrier adapters. ``settings.SHIPPING_CARRIER`` names the class.

``AddressRejected`` is a business failure; ``CarrierUnavailable`` is transient.
Every call carries an idempotency key: the same key books one parcel.
"""

import hashlib

from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models import F
from django.utils.module_loading import import_string


class AddressRejected(Exception):
    pass


class CarrierUnavailable(Exception):
    pass


class Carrier:
    name = "carrier"

    def book(self, *, idempotency_key, address, parcels) -> str:
        """Book a pickup; returns the tracking number."""
        raise NotImplementedError

    def cancel(self, *, idempotency_key) -> None:
        raise NotImplementedError


def get_carrier() -> Carrier:
    return import_string(settings.SHIPPING_CARRIER)()


class FakeCarrier(Carrier):
    """A deterministic stand-in carrier.

    - postal code ``00000``: the address is rejected (business failure).
    - city ``Flakyville``: the first two bookings with a key fail (transient).
    - city ``Nowhere``: the carrier is always unavailable (transient).
    """

    name = "fake"
    FLAKY_FAILURES = 2

    def _row(self, idempotency_key):
        from .models import FakeCarrierBooking

        if connection.in_atomic_block:
            raise RuntimeError("The carrier must not be called inside a database transaction.")
        try:
            row, _ = FakeCarrierBooking.objects.get_or_create(idempotency_key=idempotency_key)
        except IntegrityError:
            row = FakeCarrierBooking.objects.get(idempotency_key=idempotency_key)
        return row

    def book(self, *, idempotency_key, address, parcels):
        from .models import FakeCarrierBooking

        row = self._row(idempotency_key)
        if row.succeeded:
            return row.tracking_number
        FakeCarrierBooking.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
        row.refresh_from_db()
        if address.get("postal_code") == "00000":
            raise AddressRejected("The carrier does not deliver to this postal code.")
        city = address.get("city", "")
        if city == "Nowhere" or (city == "Flakyville" and row.attempts <= self.FLAKY_FAILURES):
            raise CarrierUnavailable("The carrier's booking service is unavailable.")
        row.succeeded = True
        row.tracking_number = "FK" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12].upper()
        row.save(update_fields=["succeeded", "tracking_number"])
        return row.tracking_number

    def cancel(self, *, idempotency_key):
        from .models import FakeCarrierBooking

        row = self._row(idempotency_key)
        FakeCarrierBooking.objects.filter(pk=row.pk).update(cancelled=True)
