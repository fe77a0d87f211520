"""Every admin list that shows rows of an order links to that order's admin page."""

import pytest
from django.urls import reverse

from notifications.services import notification_queue
from payments.services import payment_record_capture
from shipping.services import shipment_record
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "changelist",
    [
        "admin:payments_payment_changelist",
        "admin:shipping_shipment_changelist",
        "admin:notifications_notification_changelist",
    ],
)
def test_the_order_column_links_to_the_order(admin_client, changelist):
    order = place_order(products=[ProductFactory()])
    payment_record_capture(
        order=order, amount=order.total, currency=order.currency, gateway="fake", reference="ch_1", idempotency_key="p"
    )
    shipment_record(order=order, idempotency_key="s", tracking_number="FK1")
    notification_queue(template="order_confirmed", recipient="a@b.c", context={}, idempotency_key="n", order=order)

    html = admin_client.get(reverse(changelist)).content.decode()

    link = reverse("admin:orders_order_change", args=[order.pk])
    assert f'<a href="{link}">{order.public_id}</a>' in html
