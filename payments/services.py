"""Payment operations: charge through the gateway, record, refund.

Gateway calls happen outside any database transaction (they are network
calls to another system); their results are then recorded in one short
transaction. The idempotency key makes a repeated call charge once.
"""

from django.db import transaction

from config import sql

from .gateways import PaymentDeclined, get_gateway
from .models import Payment, PaymentStatus, Refund


def payment_due(order) -> bool:
    """Is there anything to charge? A zero total (free samples) is not charged.

    Such an order never reaches the gateway and has no ``Payment`` row (a payment
    of 0.00 is refused by ``payment_amount_positive``): the saga's payment step
    records that nothing was charged, and its refund has nothing to give back.
    """
    return order.total > 0


def _payment_for_key(*, order, amount, currency, gateway, idempotency_key) -> Payment:
    """The payment recorded under ``idempotency_key``: inserted (pending) in one statement, or the existing one, locked.

    Call inside a transaction: a row this transaction inserted is invisible to others until it commits.
    """
    payment = Payment(order=order, amount=amount, currency=currency, gateway=gateway, idempotency_key=idempotency_key)
    if not sql.insert(payment, ignore_conflicts=True):
        payment = Payment.objects.select_for_update().get(idempotency_key=idempotency_key)
    return payment


def payment_record_capture(*, order, amount, currency, gateway, reference, idempotency_key, batch=None) -> Payment:
    """Record a successful charge (idempotent on ``idempotency_key``); joins the caller's transaction.

    With ``batch`` the capture and its audit event go out with the batch.
    """
    with transaction.atomic(savepoint=False):
        payment = _payment_for_key(
            order=order, amount=amount, currency=currency, gateway=gateway, idempotency_key=idempotency_key
        )
        if payment.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            payment.capture(reference=reference, batch=batch)
            sql.write(*sql.update_statement(payment, ["status", "gateway_reference", "updated_at"]), batch=batch)
    return payment


def payment_record_failure(*, order, amount, currency, gateway, idempotency_key, code, message) -> Payment:
    with transaction.atomic(savepoint=False):
        payment = _payment_for_key(
            order=order, amount=amount, currency=currency, gateway=gateway, idempotency_key=idempotency_key
        )
        if payment.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            payment.fail(code=code, message=message)
            sql.update(payment, ["status", "failure_code", "failure_message", "updated_at"])
    return payment


def payment_gateway_charge(*, order, idempotency_key):
    """Charge the order's total at the gateway (outside any transaction); returns the ``ChargeResult``.

    A decline is recorded as a failed payment and re-raised as ``PaymentDeclined``;
    a ``GatewayError`` records nothing (retry with the same key).
    """
    gateway = get_gateway()
    try:
        return gateway.charge(
            idempotency_key=idempotency_key, token=order.payment_token, amount=order.total, currency=order.currency
        )
    except PaymentDeclined as exc:
        payment_record_failure(
            order=order,
            amount=order.total,
            currency=order.currency,
            gateway=gateway.name,
            idempotency_key=idempotency_key,
            code=exc.code,
            message=exc.message,
        )
        raise


def payment_charge(*, order, idempotency_key) -> Payment | None:
    """Charge the order's total and record it; None for a zero total (``payment_due``).

    Raises ``PaymentDeclined`` or ``GatewayError``.
    """
    if not payment_due(order):
        return None
    result = payment_gateway_charge(order=order, idempotency_key=idempotency_key)
    return payment_record_capture(
        order=order,
        amount=result.amount,
        currency=result.currency,
        gateway=get_gateway().name,
        reference=result.reference,
        idempotency_key=idempotency_key,
    )


def refund_record(*, payment, amount, reference, idempotency_key, reason="") -> Refund:
    """Record a refund of the whole payment (idempotent on ``idempotency_key``)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        refund, _ = Refund.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={"payment": payment, "amount": amount, "gateway_reference": reference, "reason": reason},
        )
        if payment.status == PaymentStatus.CAPTURED:
            payment.refund()
            payment.save(update_fields=["status", "updated_at"])
    return refund


def payment_refund(*, order, charge_key, reason="") -> Refund | None:
    """Refund whatever the gateway charged under ``charge_key``; None if nothing was charged.

    Asks the gateway, not only our rows: a charge whose answer was lost (a
    timeout after the money moved) is found and refunded too.
    """
    gateway = get_gateway()
    charge = gateway.find_charge(idempotency_key=charge_key)
    if charge is None:
        return None
    refund_key = f"{charge_key}:refund"
    reference = gateway.refund(
        idempotency_key=refund_key, charge_reference=charge.reference, amount=charge.amount, currency=charge.currency
    )
    payment = payment_record_capture(
        order=order,
        amount=charge.amount,
        currency=charge.currency,
        gateway=gateway.name,
        reference=charge.reference,
        idempotency_key=charge_key,
    )
    return refund_record(
        payment=payment, amount=charge.amount, reference=reference, idempotency_key=refund_key, reason=reason
    )
