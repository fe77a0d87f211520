"""Carrier adapters. ``settings.SHIPPING_CARRIER`` names the class.

``AddressRejected`` is a business failure; ``CarrierUnavailable`` is transient.
Every call carries an idempotency key: the same key books one parcel.
"""

import hashlib

from django.conf import settings
from django.db import connection
from django.utils import timezone
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

    def _guard(self):
        if connection.in_atomic_block:
            raise RuntimeError("The carrier must not be called inside a database transaction.")

    def _attempt(self, idempotency_key, tracking_number):
        """Insert the booking attempt, or count one more: one statement. Returns (attempts, tracking number)."""
        from .models import FakeCarrierBooking

        table = FakeCarrierBooking._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (idempotency_key, tracking_number, cancelled, succeeded, attempts, created_at) "
                "VALUES (%s, %s, false, %s, 1, %s) "
                f"ON CONFLICT (idempotency_key) DO UPDATE SET attempts = {table}.attempts + 1 "
                "RETURNING attempts, succeeded, tracking_number",
                [idempotency_key, tracking_number or "", bool(tracking_number), timezone.now()],
            )
            return cursor.fetchone()

    def book(self, *, idempotency_key, address, parcels):
        from .models import FakeCarrierBooking

        self._guard()
        tracking_number = "FK" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12].upper()
        city = address.get("city", "")
        rejected = address.get("postal_code") == "00000"
        certain = not rejected and city not in ("Nowhere", "Flakyville")
        attempts, succeeded, booked = self._attempt(idempotency_key, tracking_number if certain else "")
        if succeeded:
            return booked
        if rejected:
            raise AddressRejected("The carrier does not deliver to this postal code.")
        if city == "Nowhere" or (city == "Flakyville" and attempts <= self.FLAKY_FAILURES):
            raise CarrierUnavailable("The carrier's booking service is unavailable.")
        FakeCarrierBooking.objects.filter(idempotency_key=idempotency_key).update(
            succeeded=True, tracking_number=tracking_number
        )
        return tracking_number

    def cancel(self, *, idempotency_key):
        from .models import FakeCarrierBooking

        self._guard()
        FakeCarrierBooking.objects.filter(idempotency_key=idempotency_key).update(cancelled=True)
