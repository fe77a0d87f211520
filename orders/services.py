"""Order operations: placing an order and moving it after the saga."""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django_fsm import TransitionNotAllowed

from catalog.models import Product
from catalog.services import reservation_release
from config.observability import get_request_id

from .countries import ISO_3166_ALPHA2
from .models import CANCELLABLE, Order, OrderLine, OrderStatus
from .saga import engine
from .saga.engine import saga_create
from .saga.recovery import SagaActionError, saga_compensate
from .transitions import order_move


class OrderActionRefused(TransitionNotAllowed):
    """A staff or customer action that the order's state does not allow; the message says why (HTTP 409).

    A ``TransitionNotAllowed``, so code that catches django-fsm's refusal keeps working.
    """


class OrderNotCancellable(OrderActionRefused):
    pass


class OrderNotShippable(OrderActionRefused):
    pass


class OrderNotDeliverable(OrderActionRefused):
    pass


ADDRESS_FIELDS = ("name", "line1", "line2", "city", "region", "postal_code", "country")
REQUIRED_ADDRESS_FIELDS = ("name", "line1", "city", "postal_code", "country")
CENT = Decimal("0.01")


def _validate_lines(lines):
    """Return ``[(sku, quantity)]`` or raise ValidationError with a message per line."""
    if not lines:
        raise ValidationError({"lines": ["An order needs at least one line."]})
    if len(lines) > settings.ORDER_MAX_LINES:
        raise ValidationError({"lines": [f"An order has at most {settings.ORDER_MAX_LINES} lines."]})
    errors, seen, clean = {}, set(), []
    for index, line in enumerate(lines):
        sku, quantity = line.get("sku"), line.get("quantity")
        if not isinstance(sku, str) or not sku:
            errors[f"lines[{index}].sku"] = ["A sku is required."]
        elif sku in seen:
            errors[f"lines[{index}].sku"] = [f"Duplicate sku {sku!r}: put the whole quantity on one line."]
        seen.add(sku)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            errors[f"lines[{index}].quantity"] = ["Quantity must be a whole number."]
        elif not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
            errors[f"lines[{index}].quantity"] = [f"Quantity must be between 1 and {settings.ORDER_MAX_QUANTITY}."]
        clean.append((sku, quantity))
    if errors:
        raise ValidationError(errors)
    return clean


def _largest(model, field_name) -> Decimal:
    """The largest amount a ``numeric(p, s)`` column holds, e.g. 9999999999.99 for (12, 2)."""
    field = model._meta.get_field(field_name)
    return Decimal(10) ** (field.max_digits - field.decimal_places) - Decimal(1).scaleb(-field.decimal_places)


def _validate_amounts(order_lines):
    """Refuse a line total or an order total that its column could not store (a 400, not a DataError)."""
    line_max, total_max = _largest(OrderLine, "line_total"), _largest(Order, "total")
    errors = {}
    for index, line in enumerate(order_lines):
        if line.line_total > line_max:
            errors[f"lines[{index}].quantity"] = [f"The line total would exceed {line_max}; order fewer."]
    if not errors and sum(line.line_total for line in order_lines) > total_max:
        errors["lines"] = [f"The order total would exceed {total_max}; split it into several orders."]
    if errors:
        raise ValidationError(errors)


def _validate_address(address):
    address = address or {}
    errors = {}
    for field in REQUIRED_ADDRESS_FIELDS:
        value = address.get(field)
        if not isinstance(value, str) or not value.strip():
            errors[f"shipping_address.{field}"] = ["This field is required."]
    country = address.get("country")
    if isinstance(country, str) and country and country.upper() not in ISO_3166_ALPHA2:
        errors["shipping_address.country"] = ["Use an ISO 3166-1 alpha-2 country code, such as 'DE'."]
    if errors:
        raise ValidationError(errors)
    clean = {field: str(address.get(field) or "").strip() for field in ADDRESS_FIELDS}
    clean["country"] = clean["country"].upper()
    return clean


@transaction.atomic
def order_place(
    *, customer, lines, shipping_address, payment_token, idempotency_key="", request_fingerprint=""
) -> Order:
    """Create an order from ``[{"sku", "quantity"}]``; prices come from the catalog.

    Raises ``ValidationError`` (field-keyed) for unknown or inactive products,
    bad quantities, duplicate skus and incomplete addresses.
    """
    clean_lines = _validate_lines(lines)
    address = _validate_address(shipping_address)
    if not isinstance(payment_token, str) or not payment_token:
        raise ValidationError({"payment_token": ["A payment token is required."]})

    products = {p.sku: p for p in Product.objects.filter(sku__in=[sku for sku, _ in clean_lines])}
    errors = {}
    for index, (sku, _) in enumerate(clean_lines):
        product = products.get(sku)
        if product is None:
            errors[f"lines[{index}].sku"] = [f"Unknown product {sku!r}."]
        elif not product.active:
            errors[f"lines[{index}].sku"] = [f"Product {sku!r} is not for sale."]
    if errors:
        raise ValidationError(errors)
    currencies = {products[sku].currency for sku, _ in clean_lines}
    if len(currencies) > 1:
        raise ValidationError({"lines": ["All products of an order must have the same currency."]})

    order_lines = []
    for sku, quantity in clean_lines:
        product = products[sku]
        order_lines.append(
            OrderLine(
                product=product,
                sku=product.sku,
                name=product.name,
                unit_price=product.price,
                quantity=quantity,
                line_total=(product.price * quantity).quantize(CENT),
            )
        )
    _validate_amounts(order_lines)
    order = Order.objects.create(
        customer=customer,
        currency=currencies.pop(),
        total=sum((line.line_total for line in order_lines), start=Decimal("0.00")),
        idempotency_key=idempotency_key or "",
        request_fingerprint=request_fingerprint or "",
        payment_token=payment_token,
        request_id=get_request_id(),
        **{f"shipping_{field}": value for field, value in address.items()},
    )
    for line in order_lines:
        line.order = order
    OrderLine.objects.bulk_create(order_lines)
    saga_create(order=order)  # its first step is enqueued when this transaction commits
    return order


def order_cancel(*, order, reason="Cancelled at your request.") -> Order:
    """Cancel an order that has not shipped: its saga's compensations undo everything.

    Idempotent for an order already cancelling or cancelled. Raises
    ``OrderNotCancellable`` once the goods have left. Saga and order rows are
    locked together first (the saga engine's order: saga, then order) and the
    state is checked under the lock, so of two concurrent cancels one starts the
    compensation and the other finds it started, and a cancel racing a ship
    either wins or is refused: never both, never a crash.
    """
    with transaction.atomic():
        saga = engine.lock_saga(order.saga.pk, with_order=True)
        order = saga.order
        if order.status in (OrderStatus.COMPENSATING, OrderStatus.CANCELLED):
            return order
        if order.status == OrderStatus.NEEDS_ATTENTION:
            raise OrderNotCancellable(
                "Our staff are looking into this order; it cannot be cancelled online right now. Please contact us."
            )
        if order.status not in CANCELLABLE:
            raise OrderNotCancellable(
                f"The order is {order.get_status_display().lower()}; it can be cancelled only until it ships."
            )
        try:
            saga_compensate(saga.pk, reason=reason)
        except SagaActionError as exc:  # the saga disagrees with its order: refuse, change nothing
            raise OrderNotCancellable(str(exc)) from exc
    order.refresh_from_db()
    return order


def _lock(order) -> Order:
    return Order.objects.select_for_update().get(pk=order.pk)


@transaction.atomic
def order_ship(*, order) -> Order:
    """Staff: the parcel left the warehouse. Commits the stock; the order becomes ``shipped``.

    Locks the order, then its reservation. Raises ``OrderNotShippable`` (and changes
    nothing) unless the order is confirmed, still holds its stock and has a booked
    shipment: shipping without committing stock would sell the units twice.
    """
    from catalog.services import NoStockHeld, order_stock_commit
    from shipping.models import ShipmentStatus
    from shipping.services import shipment_mark_dispatched

    order = _lock(order)
    if order.status != OrderStatus.CONFIRMED:
        raise OrderNotShippable(
            f"The order is {order.get_status_display().lower()}: only a confirmed order can be shipped."
        )
    shipment = order.shipments.filter(status=ShipmentStatus.CREATED).first()
    if shipment is None:
        raise OrderNotShippable("The order has no booked shipment: it cannot be shipped.")
    order_move(order, "ship")
    shipment_mark_dispatched(shipment=shipment)
    try:
        order_stock_commit(order=order)
    except NoStockHeld as exc:  # leaving this atomic block rolls back the ship and the dispatch (and their audit)
        raise OrderNotShippable(
            f"No stock is held for this order ({exc}): shipping it would sell the same units twice. "
            "Cancel the order instead."
        ) from exc
    return order


@transaction.atomic
def order_deliver(*, order) -> Order:
    """Staff: the carrier delivered the parcel. Raises ``OrderNotDeliverable`` unless it was shipped."""
    from shipping.models import ShipmentStatus
    from shipping.services import shipment_mark_delivered

    order = _lock(order)
    if order.status != OrderStatus.SHIPPED:
        raise OrderNotDeliverable(
            f"The order is {order.get_status_display().lower()}: only a shipped order can be delivered."
        )
    shipment = order.shipments.filter(status=ShipmentStatus.DISPATCHED).first()
    if shipment is None:
        raise OrderNotDeliverable("The order has no dispatched shipment: it cannot be delivered.")
    order_move(order, "deliver")
    shipment_mark_delivered(shipment=shipment)
    return order


class HoldStillNeeded(Exception):
    """Staff asked to release a hold that a live order still needs; the message says what to do instead."""


@transaction.atomic
def reservation_release_by_staff(*, reservation) -> bool:
    """Staff release a hold by hand: only one that no live order needs. False if it is not active.

    The order row is locked first (then the reservation, as shipping does), so the
    order cannot move while we decide. Any order that is not cancelled may still ship,
    resume or be compensated, and needs its stock: releasing it behind its saga's back
    would ship units that are not held (selling them twice). Such a release raises
    ``HoldStillNeeded``: cancel the order instead, and its saga releases the stock.
    What is left to release by hand is the hold of an order an operator resolved
    (cancelled) without the saga giving its stock back.
    """
    order = Order.objects.select_for_update().get(pk=reservation.order_id)
    if order.status != OrderStatus.CANCELLED:
        raise HoldStillNeeded(
            f"Reservation {reservation.pk} was not released: order {order.public_id} is "
            f"{order.get_status_display().lower()} and still needs its stock. Cancel the order instead "
            "(its saga releases the stock and refunds the customer)."
        )
    return reservation_release(reservation=reservation)
