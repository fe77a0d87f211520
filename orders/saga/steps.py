"""The order fulfilment saga's steps and compensations.

Each action calls another app's service with an idempotency key derived from
the order and the step, and turns that app's errors into the saga's: a
``StepFailed`` for a business failure, anything else is retried.

Every compensation runs whether or not its step ran (the step's row may be
stale after a lost asynchronous commit), so each is safe when nothing
happened, and each asks the outside world by the step's key and closes that
key there: a call of the step still on its way is refused afterwards.
"""

from decimal import Decimal

from catalog.models import Reservation
from catalog.services import OutOfStock, reservation_hold, reservation_release, stock_reserve
from notifications.models import NotificationStatus
from notifications.services import (
    PermanentDeliveryError,
    notification_queue_and_send,
    notification_void,
    order_email_context,
    order_notification_queue,
)
from orders.selectors import order_stock_lines
from payments.gateways import PaymentDeclined, get_gateway
from payments.services import payment_due, payment_gateway_charge, payment_record_capture, payment_refund
from shipping.carriers import AddressRejected, BookingCancelled
from shipping.selectors import shipment_live
from shipping.services import shipment_book, shipment_cancel, shipment_record

from .definition import SagaDefinition, Step, StepFailed


# --- reserve_inventory / release_inventory --------------------------------------
def reserve_inventory(order, key):
    try:
        reservation = stock_reserve(order=order, lines=order_stock_lines(order))
    except OutOfStock as exc:
        raise StepFailed(f"Sorry, not enough stock for: {', '.join(exc.skus)}.", str(exc)) from exc
    return {"reservation_id": reservation.pk}


def release_inventory(order, key):
    # reserve_inventory writes only our database, its effect and record in one transaction:
    # no reservation means it never happened, and a late one is refused by its own record.
    reservation = Reservation.objects.filter(order=order).first()
    released = reservation is not None and reservation_release(reservation=reservation)
    return {"released": released}


# --- process_payment / refund_payment --------------------------------------------
def process_payment(order, key):
    if not payment_due(order):  # a zero total (free samples): nothing to charge, the gateway is not asked
        return {"charged": False, "amount": "0.00"}
    try:
        charge = payment_gateway_charge(order=order, idempotency_key=key)
    except PaymentDeclined as exc:
        raise StepFailed("Your payment was declined.", str(exc)) from exc
    return {"reference": charge.reference, "amount": str(charge.amount), "currency": charge.currency}


def record_payment(order, key, result, batch):
    if payment_due(order):
        payment = payment_record_capture(
            order=order,
            amount=Decimal(result["amount"]),
            currency=result["currency"],
            gateway=get_gateway().name,
            reference=result["reference"],
            idempotency_key=key,
            batch=batch,
        )
        recorded = {"payment_id": payment.pk, "reference": payment.gateway_reference}
    else:
        recorded = {"charged": False, "amount": "0.00", "payment_id": None}  # no Payment row for 0.00
    reservation_hold(
        order=order, batch=batch
    )  # paid (or nothing to pay): the stock is kept until it ships or is cancelled
    return recorded


def refund_payment(order, key):
    if not payment_due(order):  # process_payment never calls the gateway for a zero total
        return {"charged": False, "refund_id": None}
    # Close the key at the gateway first: a charge still on its way is declined from now on,
    # so what the refund finds (or does not) stays true.
    get_gateway().void(idempotency_key=key)
    refund = payment_refund(order=order, charge_key=key, reason=order.cancel_reason or "order cancelled")
    return {"refund_id": refund.pk if refund else None}


# --- create_shipment / cancel_shipment -------------------------------------------
def create_shipment(order, key):
    try:
        return {"tracking_number": shipment_book(order=order, idempotency_key=key)}
    except AddressRejected as exc:
        raise StepFailed("The carrier cannot deliver to this address.", str(exc)) from exc
    except BookingCancelled as exc:  # the order's compensation came first
        raise StepFailed("The order was cancelled.", str(exc)) from exc


def record_shipment(order, key, result, batch):
    shipment = shipment_record(order=order, idempotency_key=key, tracking_number=result["tracking_number"])
    return {"shipment_id": shipment.pk, "tracking_number": shipment.tracking_number}


def cancel_shipment(order, key):
    shipment = shipment_cancel(order=order, idempotency_key=key)
    return {"shipment_id": shipment.pk if shipment else None, "status": shipment.status if shipment else None}


# --- send_confirmation / send_cancellation ---------------------------------------
def send_confirmation(order, key):
    shipment = shipment_live(order=order)
    try:
        notification = notification_queue_and_send(
            template="order_confirmed",
            recipient=order.customer.email,
            context=order_email_context(order, tracking_number=shipment.tracking_number if shipment else ""),
            idempotency_key=key,
            order=order,
        )
    except PermanentDeliveryError as exc:
        raise StepFailed("We could not send your confirmation to your email address.", str(exc)) from exc
    if notification.status != NotificationStatus.SENT:  # refused earlier, or voided by send_cancellation
        raise StepFailed("We could not send your confirmation.", f"confirmation {notification.status}")
    return {"notification_id": notification.pk}


def send_cancellation(order, key):
    """Queue the cancellation notice; a notifications task sends it (with its own retries).

    The confirmation's key (``key``) is voided first: a confirmation still on its way is not
    sent, and one sent already comes before this notice. The notice's key is the one the
    "order cancelled" receiver uses too: one email either way.
    """
    notification_void(
        template="order_confirmed",
        recipient=order.customer.email,
        idempotency_key=key,
        reason="voided: the order was cancelled before its confirmation was sent",
        order=order,
    )
    notification = order_notification_queue(order=order, template="order_cancelled")
    return {"notification_id": notification.pk}


ORDER_FULFILMENT = SagaDefinition(
    name="order_fulfilment",
    version=1,
    steps=(
        Step(
            "reserve_inventory",
            reserve_inventory,
            "release_inventory",
            release_inventory,
            advance="mark_reserved",
            time_limit=30,
            local=True,
        ),
        Step(
            "process_payment",
            process_payment,
            "refund_payment",
            refund_payment,
            advance="mark_paid",
            record=record_payment,
            time_limit=60,
        ),
        Step(
            "create_shipment",
            create_shipment,
            "cancel_shipment",
            cancel_shipment,
            advance="mark_shipment_created",
            record=record_shipment,
            time_limit=30,
        ),
        Step(
            "send_confirmation",
            send_confirmation,
            "send_cancellation",
            send_cancellation,
            advance="confirm",
            time_limit=15,
        ),
    ),
)

DEFINITIONS = {(d.name, d.version): d for d in [ORDER_FULFILMENT]}


def definition_of(saga) -> SagaDefinition:
    """The definition a saga was started under (its name and version)."""
    return DEFINITIONS[(saga.definition, saga.version)]
