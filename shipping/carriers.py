"""Carrier adapters. ``settings.SHIPPING_CARRIER`` names the class.

``AddressRejected`` is a business failure; ``CarrierUnavailable`` is transient.
Every call carries an idempotency key: the same key books one parcel.
"""

import hashlib
from functools import partial

from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

from config import sql


class AddressRejected(Exception):
    pass


class CarrierUnavailable(Exception):
    pass


class BookingCancelled(Exception):
    """The key was cancelled before a booking with it was made: the carrier refuses it (business failure)."""


class Carrier:
    name = "carrier"

    def book(self, *, idempotency_key, address, parcels) -> str:
        """Book a pickup; returns the tracking number."""
        raise NotImplementedError

    def cancel(self, *, idempotency_key) -> None:
        """Cancel the booking made with this key, and close the key: a booking with it still on its
        way, or sent later, is refused (``BookingCancelled``). A no-op for a key already cancelled."""
        raise NotImplementedError

    def books(self) -> list[tuple[str, bool]] | None:
        """``(idempotency key, cancelled)`` of every booking made, for ``check_invariants``; None when
        the carrier cannot list them (a real one)."""
        return None


def get_carrier() -> Carrier:
    return import_string(settings.SHIPPING_CARRIER)()


class FakeCarrier(Carrier):
    """A deterministic stand-in carrier.

    - postal code ``00000``: the address is rejected (business failure).
    - city ``Flakyville``: the first two bookings with a key fail (transient).
    - city ``Nowhere``: the carrier is always unavailable (transient).
    - a key cancelled before its booking succeeded is refused from then on (``BookingCancelled``).
    """

    name = "fake"
    FLAKY_FAILURES = 2

    def _guard(self):
        if connection.in_atomic_block:
            raise RuntimeError("The carrier must not be called inside a database transaction.")

    def _attempt(self, idempotency_key, tracking_number):
        """Insert the booking attempt, or count one more: one statement.

        Returns (attempts, succeeded, tracking number, cancelled)."""
        from .models import FakeCarrierBooking

        attempt = FakeCarrierBooking(
            idempotency_key=idempotency_key,
            tracking_number=tracking_number or "",
            succeeded=bool(tracking_number),
            attempts=1,
        )
        insert, params = sql.insert_statement(attempt, returning=False)
        table, column = sql.table(FakeCarrierBooking), partial(sql.column, FakeCarrierBooking)
        returned = ("attempts", "succeeded", "tracking_number", "cancelled")
        with connection.cursor() as cursor:
            cursor.execute(
                f"{insert} ON CONFLICT ({column('idempotency_key')}) DO UPDATE SET "
                f"{column('attempts')} = {table}.{column('attempts')} + 1 RETURNING {', '.join(map(column, returned))}",
                params,
            )
            return cursor.fetchone()

    def book(self, *, idempotency_key, address, parcels):
        from .models import FakeCarrierBooking

        self._guard()
        tracking_number = "FK" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12].upper()
        city = address.get("city", "")
        rejected = address.get("postal_code") == "00000"
        certain = not rejected and city not in ("Nowhere", "Flakyville")
        attempts, succeeded, booked, cancelled = self._attempt(idempotency_key, tracking_number if certain else "")
        if cancelled:
            raise self._cancelled()
        if succeeded:
            return booked
        if rejected:
            raise AddressRejected("The carrier does not deliver to this postal code.")
        if city == "Nowhere" or (city == "Flakyville" and attempts <= self.FLAKY_FAILURES):
            raise CarrierUnavailable("The carrier's booking service is unavailable.")
        if not FakeCarrierBooking.objects.filter(idempotency_key=idempotency_key, cancelled=False).update(
            succeeded=True, tracking_number=tracking_number
        ):
            raise self._cancelled()  # a cancel came first (the row lock orders the two)
        return tracking_number

    @staticmethod
    def _cancelled():
        return BookingCancelled("The booking under this key was cancelled before it was made.")

    def cancel(self, *, idempotency_key):
        """One statement: mark the key's booking cancelled, or record the key as cancelled before any booking."""
        from .models import FakeCarrierBooking

        self._guard()
        cancelled = FakeCarrierBooking(idempotency_key=idempotency_key, cancelled=True)
        insert, params = sql.insert_statement(cancelled, returning=False)
        column = partial(sql.column, FakeCarrierBooking)
        with connection.cursor() as cursor:
            cursor.execute(
                f"{insert} ON CONFLICT ({column('idempotency_key')}) DO UPDATE SET {column('cancelled')} = true", params
            )

    def books(self):
        from .models import FakeCarrierBooking

        return list(FakeCarrierBooking.objects.filter(succeeded=True).values_list("idempotency_key", "cancelled"))
