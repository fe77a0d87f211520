"""Zero totals (free samples): allowed in the catalog and the API, never sent to the gateway.

The saga's side is in ``tests/orders/test_free_orders.py`` (real worker).
"""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.urls import reverse

from catalog.models import Product
from orders.saga import events as saga_events
from payments.models import FakeGatewayCharge, Payment
from payments.services import payment_charge, payment_due, payment_refund
from tests.api.conftest import client_for
from tests.factories import ProductFactory, UserFactory, place_order

# The fake gateway plays an external system and refuses to run inside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)

ADDRESS = {"name": "Ada", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    sent = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: sent.append(names))
    cache.clear()  # API throttles
    return sent


def free_order():
    return place_order(products=[ProductFactory(price=Decimal("0.00"))])


def test_only_a_positive_total_is_due():
    assert not payment_due(free_order())
    assert payment_due(place_order(products=[ProductFactory(price=Decimal("0.01"))]))


def test_charging_a_zero_total_asks_no_gateway_and_records_no_payment():
    order = free_order()

    assert payment_charge(order=order, idempotency_key=f"{order.public_id}:process_payment") is None

    assert not Payment.objects.exists() and not FakeGatewayCharge.objects.exists()
    assert payment_refund(order=order, charge_key=f"{order.public_id}:process_payment") is None


def test_the_api_accepts_an_order_of_free_samples(django_capture_on_commit_callbacks, no_broker):
    ProductFactory(sku="SAMPLE-01", price=Decimal("0.00"))
    api = client_for(UserFactory())

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/orders/",
            {"lines": [{"sku": "SAMPLE-01", "quantity": 3}], "shipping_address": ADDRESS, "payment_token": "tok_visa"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="free-1",
        )

    assert response.status_code == 202, response.content
    assert (response.json()["total"], response.json()["lines"][0]["unit_price"]) == ("0.00", "0.00")
    assert no_broker and no_broker[0][0] == "reserve_inventory"  # its saga starts like any other


def test_staff_can_price_a_product_at_zero_in_the_admin_but_not_below(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    product = ProductFactory(price=Decimal("5.00"), on_hand=7)
    change = reverse("admin:catalog_product_change", args=[product.pk])

    def save(price):
        return client.post(
            change,
            {
                "sku": product.sku,
                "name": product.name,
                "price": price,
                "currency": "USD",
                "active": "on",
                "stock-TOTAL_FORMS": "1",
                "stock-INITIAL_FORMS": "1",
                "stock-MIN_NUM_FORMS": "0",
                "stock-MAX_NUM_FORMS": "1",
                "stock-0-product": str(product.pk),
                "stock-0-on_hand": "7",
            },
        )

    assert save("0.00").status_code == 302
    assert Product.objects.get(pk=product.pk).price == Decimal("0.00")
    refused = save("-1.00")
    assert refused.status_code == 200 and b"greater than or equal to 0" in refused.content
    assert Product.objects.get(pk=product.pk).price == Decimal("0.00")
