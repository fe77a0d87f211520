from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from orders.services import order_place
from tests.factories import ADDRESS, ProductFactory, place_order

pytestmark = pytest.mark.django_db


def place(customer, lines, **overrides):
    kwargs = {"shipping_address": ADDRESS, "payment_token": "tok_visa"} | overrides
    return order_place(customer=customer, lines=lines, **kwargs)


def test_prices_come_from_the_catalog_and_are_copied(customer):
    laptop = ProductFactory(price=Decimal("999.99"))
    mouse = ProductFactory(price=Decimal("29.99"))

    order = place(customer, [{"sku": laptop.sku, "quantity": 2}, {"sku": mouse.sku, "quantity": 3}])

    assert order.status == "pending"
    assert order.total == Decimal("2089.95")
    assert order.currency == "USD"
    assert [(line.sku, line.unit_price, line.line_total) for line in order.lines.all()] == [
        (laptop.sku, Decimal("999.99"), Decimal("1999.98")),
        (mouse.sku, Decimal("29.99"), Decimal("89.97")),
    ]
    laptop.price = Decimal("1.00")
    laptop.save()
    order.refresh_from_db()
    assert order.lines.get(sku=laptop.sku).unit_price == Decimal("999.99")


def test_address_is_normalised(customer):
    order = place(
        customer, [{"sku": ProductFactory().sku, "quantity": 1}], shipping_address=ADDRESS | {"country": "gb"}
    )
    assert order.shipping_country == "GB"
    assert order.shipping_address["city"] == "London"


@pytest.mark.parametrize(
    ("lines", "field", "message"),
    [
        ([], "lines", "at least one line"),
        ([{"sku": "NOPE", "quantity": 1}], "lines[0].sku", "Unknown product"),
        ([{"sku": "INACTIVE", "quantity": 1}], "lines[0].sku", "not for sale"),
        ([{"sku": "OK", "quantity": 0}], "lines[0].quantity", "between 1 and"),
        ([{"sku": "OK", "quantity": -3}], "lines[0].quantity", "between 1 and"),
        ([{"sku": "OK", "quantity": 10**9}], "lines[0].quantity", "between 1 and"),
        ([{"sku": "OK", "quantity": "2"}], "lines[0].quantity", "whole number"),
        ([{"sku": "OK", "quantity": True}], "lines[0].quantity", "whole number"),
        ([{"sku": "OK", "quantity": 1}, {"sku": "OK", "quantity": 1}], "lines[1].sku", "Duplicate sku"),
        ([{"quantity": 1}], "lines[0].sku", "required"),
    ],
)
def test_bad_lines_are_refused_with_a_field_error(customer, lines, field, message):
    ProductFactory(sku="OK")
    ProductFactory(sku="INACTIVE", active=False)
    with pytest.raises(ValidationError) as excinfo:
        place(customer, lines)
    assert message in " ".join(excinfo.value.message_dict[field])
    assert not customer.orders.exists()


def test_too_many_lines_are_refused(customer, settings):
    settings.ORDER_MAX_LINES = 2
    products = [ProductFactory() for _ in range(3)]
    with pytest.raises(ValidationError) as excinfo:
        place(customer, [{"sku": p.sku, "quantity": 1} for p in products])
    assert "at most 2 lines" in excinfo.value.message_dict["lines"][0]


@pytest.mark.parametrize(
    ("address", "field"),
    [
        (ADDRESS | {"line1": ""}, "shipping_address.line1"),
        (ADDRESS | {"city": "  "}, "shipping_address.city"),
        ({k: v for k, v in ADDRESS.items() if k != "postal_code"}, "shipping_address.postal_code"),
        (ADDRESS | {"country": "Germany"}, "shipping_address.country"),
        (ADDRESS | {"name": 7}, "shipping_address.name"),
    ],
)
def test_incomplete_addresses_are_refused(customer, address, field):
    with pytest.raises(ValidationError) as excinfo:
        place(customer, [{"sku": ProductFactory().sku, "quantity": 1}], shipping_address=address)
    assert field in excinfo.value.message_dict


def test_a_payment_token_is_required(customer):
    with pytest.raises(ValidationError) as excinfo:
        place(customer, [{"sku": ProductFactory().sku, "quantity": 1}], payment_token="")
    assert "payment_token" in excinfo.value.message_dict


def test_idempotency_key_is_unique_per_customer(customer):
    product = ProductFactory()
    place_order(customer=customer, products=[product], idempotency_key="k1")
    place_order(products=[product], idempotency_key="k1")  # another customer may reuse it
    with pytest.raises(IntegrityError), transaction.atomic():
        place_order(customer=customer, products=[product], idempotency_key="k1")
