"""Payment-gateway adapters. ``settings.PAYMENT_GATEWAY`` names the class.

Every call carries an idempotency key: the same key twice charges (or refunds)
once and answers the same. ``PaymentDeclined`` is a business failure (do not
retry); ``GatewayError`` is transient (retry with backoff).
"""

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

from config import sql


class PaymentDeclined(Exception):
    def __init__(self, code, message):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


class GatewayError(Exception):
    """A transient failure: timeout, connection error, 5xx. Safe to retry with the same key."""


@dataclass(frozen=True)
class ChargeResult:
    reference: str
    amount: Decimal
    currency: str


class PaymentGateway:
    name = "gateway"

    def charge(self, *, idempotency_key, token, amount, currency) -> ChargeResult:
        raise NotImplementedError

    def find_charge(self, *, idempotency_key) -> ChargeResult | None:
        """The successful charge made with this key, if any (to refund an uncertain one)."""
        raise NotImplementedError

    def void(self, *, idempotency_key) -> ChargeResult | None:
        """Close ``idempotency_key`` for charges: the charge that succeeded with it, if any (refund it
        next); otherwise none ever will: a charge with this key still on its way, or sent later, is
        declined (``charge_voided``). A compensation calls it before it looks for what to refund.
        """
        raise NotImplementedError

    def refund(self, *, idempotency_key, charge_reference, amount, currency) -> str:
        raise NotImplementedError

    def books(self) -> list[tuple[str, str]] | None:
        """``(idempotency key, "charge" | "refund")`` of every charge and refund that succeeded, for
        ``check_invariants``; None when the gateway cannot list them (a real one)."""
        return None


def get_gateway() -> PaymentGateway:
    return import_string(settings.PAYMENT_GATEWAY)()


class FakeGateway(PaymentGateway):
    """A deterministic stand-in for a real gateway, for demos and tests.

    The payment token picks the behaviour:

    - ``tok_declined``: the card is declined (business failure).
    - ``tok_timeout``: every charge times out (transient, never succeeds).
    - ``tok_flaky``: the first two charges with a key time out, the third succeeds.
    - ``tok_refund_fails``: charges succeed, refunds always time out.
    - any other token: success.
    - a key voided before its charge succeeded is declined from then on (``charge_voided``).

    It plays an external system, so its state is committed on its own: it
    refuses to be called inside the caller's database transaction.
    """

    name = "fake"
    FLAKY_FAILURES = 2
    # A row's kind; a void is a key closed before any charge with it succeeded.
    CHARGE, REFUND, VOID = "charge", "refund", "void"

    def _guard(self):
        if connection.in_atomic_block:
            raise RuntimeError("The payment gateway must not be called inside a database transaction.")

    def _record(self, *, idempotency_key, kind, token, amount, currency, succeed_now, reference):
        """Insert the attempt, or count one more on the existing key: one statement.

        ``succeed_now`` settles a first attempt that cannot fail in the same
        statement; a replay keeps whatever the first attempt stored.
        """
        from .models import FakeGatewayCharge

        attempt = FakeGatewayCharge(
            idempotency_key=idempotency_key,
            kind=kind,
            token=token,
            amount=amount,
            currency=currency,
            reference=reference if succeed_now else "",
            succeeded=succeed_now,
            attempts=1,
        )
        insert, params = sql.insert_statement(attempt, returning=False)
        table, column = sql.table(FakeGatewayCharge), partial(sql.column, FakeGatewayCharge)
        returned = ("id", "attempts", "succeeded", "reference", "amount", "currency", "token", "kind")
        with connection.cursor() as cursor:
            cursor.execute(
                f"{insert} ON CONFLICT ({column('idempotency_key')}) DO UPDATE SET "
                f"{column('attempts')} = {table}.{column('attempts')} + 1 RETURNING {', '.join(map(column, returned))}",
                params,
            )
            row = cursor.fetchone()
        return FakeGatewayCharge(idempotency_key=idempotency_key, **dict(zip(returned, row, strict=True)))

    def _succeed(self, row, reference):
        """Settle an attempt, unless a void came first (then ``PaymentDeclined``)."""
        from .models import FakeGatewayCharge

        if not FakeGatewayCharge.objects.filter(pk=row.pk, kind=row.kind).update(succeeded=True, reference=reference):
            raise self._voided()
        row.succeeded, row.reference = True, reference
        return row

    @staticmethod
    def _voided():
        return PaymentDeclined("charge_voided", "A void under this key came first: the charge was not made.")

    @staticmethod
    def _reference(prefix, key):
        return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:20]}"

    FAILING_TOKENS = {"tok_declined", "tok_timeout", "tok_flaky"}

    def charge(self, *, idempotency_key, token, amount, currency):
        self._guard()
        reference = self._reference("ch", idempotency_key)
        row = self._record(
            idempotency_key=idempotency_key,
            kind=self.CHARGE,
            token=token,
            amount=amount,
            currency=currency,
            succeed_now=token not in self.FAILING_TOKENS,
            reference=reference,
        )
        if row.kind == self.VOID:
            raise self._voided()
        if row.succeeded:
            return ChargeResult(row.reference, Decimal(str(row.amount)), row.currency)
        if token == "tok_declined":
            raise PaymentDeclined("card_declined", "The card was declined.")
        if token == "tok_timeout" or (token == "tok_flaky" and row.attempts <= self.FLAKY_FAILURES):
            raise GatewayError("The payment gateway timed out.")
        self._succeed(row, reference)
        return ChargeResult(row.reference, Decimal(str(row.amount)), row.currency)

    def find_charge(self, *, idempotency_key):
        self._guard()
        from .models import FakeGatewayCharge

        charges = FakeGatewayCharge.objects.filter(idempotency_key=idempotency_key, kind=self.CHARGE, succeeded=True)
        row = charges.first()
        return ChargeResult(row.reference, row.amount, row.currency) if row else None

    def void(self, *, idempotency_key):
        """One statement closes the key: a new row of kind ``void``, or an unsettled charge attempt
        turned into one (the row lock orders it against ``_succeed``); a settled charge stays."""
        self._guard()
        from .models import FakeGatewayCharge

        void = FakeGatewayCharge(idempotency_key=idempotency_key, kind=self.VOID, amount=0, currency="")
        insert, params = sql.insert_statement(void, returning=False)
        table, column = sql.table(FakeGatewayCharge), partial(sql.column, FakeGatewayCharge)
        with connection.cursor() as cursor:
            cursor.execute(
                f"{insert} ON CONFLICT ({column('idempotency_key')}) DO UPDATE SET {column('kind')} = "
                f"EXCLUDED.{column('kind')} WHERE {table}.{column('kind')} = %s AND NOT {table}.{column('succeeded')}",
                [*params, self.CHARGE],
            )
        return self.find_charge(idempotency_key=idempotency_key)

    def books(self):
        from .models import FakeGatewayCharge

        return list(FakeGatewayCharge.objects.filter(succeeded=True).values_list("idempotency_key", "kind"))

    def refund(self, *, idempotency_key, charge_reference, amount, currency):
        self._guard()
        from .models import FakeGatewayCharge

        charge = FakeGatewayCharge.objects.filter(reference=charge_reference, kind=self.CHARGE, succeeded=True).first()
        if charge is None:
            raise PaymentDeclined("no_such_charge", f"No charge {charge_reference}.")
        reference = self._reference("re", idempotency_key)
        fails = charge.token == "tok_refund_fails"
        row = self._record(
            idempotency_key=idempotency_key,
            kind=self.REFUND,
            token=charge.token,
            amount=amount,
            currency=currency,
            succeed_now=not fails,
            reference=reference,
        )
        if row.succeeded:
            return row.reference
        if fails:
            raise GatewayError("The payment gateway timed out.")
        return self._succeed(row, reference).reference
