"""What listens to the saga: notifications, audit and the analytics read model (real worker)."""

import smtplib
from decimal import Decimal

import pytest
from django.core.mail.backends.locmem import EmailBackend

from audit.models import AuditEvent
from notifications.models import Notification
from orders import analytics
from orders.services import order_cancel, order_deliver, order_ship
from tests.api.conftest import client_for
from tests.factories import ProductFactory, StaffFactory, UserFactory, place_order

from .saga_helpers import assert_invariants, wait_for_saga, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("saga_worker")]


class BrokenBackend(EmailBackend):
    def send_messages(self, messages):
        raise smtplib.SMTPServerDisconnected("the mail server is down")


@pytest.fixture(autouse=True)
def fake_email(settings, mailoutbox):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    return mailoutbox


def test_a_saga_failing_at_payment_sends_one_cancellation_and_no_confirmation(mailoutbox):
    order = place_order(products=[ProductFactory()], payment_token="tok_declined")
    assert wait_for_saga(order).status == "compensated"
    wait_until(lambda: Notification.objects.filter(order=order, status="sent").exists(), message="cancellation sent")

    assert [m.to for m in mailoutbox] == [[order.customer.email]]
    assert "was cancelled" in mailoutbox[0].subject
    assert "Your payment was declined." in mailoutbox[0].body
    assert Notification.objects.filter(order=order, template="order_cancelled").count() == 1
    # send_cancellation voided the confirmation's key: a row that was never sent, and never will be.
    assert list(Notification.objects.filter(order=order, template="order_confirmed").values_list("status")) == [
        ("failed",)
    ]


def test_shipped_and_delivered_emails_follow_the_order(mailoutbox):
    order = place_order(products=[ProductFactory()])
    wait_for_saga(order)
    order_ship(order=order)
    order_deliver(order=order)
    wait_until(lambda: Notification.objects.filter(order=order, status="sent").count() == 3, message="3 emails")
    assert [m.subject.split("…")[1].strip() for m in mailoutbox] == ["is confirmed", "is on its way", "was delivered"]
    assert order.shipments.get().tracking_number in mailoutbox[1].body


def test_a_failing_email_backend_does_not_break_the_order(settings, mailoutbox):
    order = place_order(products=[ProductFactory()])
    wait_for_saga(order)
    settings.EMAIL_BACKEND = "tests.orders.test_saga_side_effects.BrokenBackend"

    order_ship(order=order)  # returns at once: the email is a task scheduled after commit
    order.refresh_from_db()
    assert order.status == "shipped"
    wait_until(
        lambda: Notification.objects.filter(order=order, template="order_shipped", attempts__gte=1).exists(),
        message="a failed attempt",
    )
    notification = Notification.objects.get(order=order, template="order_shipped")
    assert notification.status == "queued" and "mail server is down" in notification.last_error
    assert_invariants()


def test_audit_trail_of_a_saga_and_analytics_match_a_rebuild():
    mouse = ProductFactory(sku="MOUSE", price=Decimal("10.00"), on_hand=20)
    laptop = ProductFactory(sku="LAPTOP", price=Decimal("100.00"), on_hand=1)
    customer = UserFactory()
    orders = [
        place_order(customer=customer, products=[mouse], quantity=2),  # confirmed
        place_order(customer=customer, products=[mouse, laptop]),  # confirmed, then shipped + delivered
        place_order(customer=customer, products=[mouse], payment_token="tok_declined"),  # cancelled
        place_order(customer=customer, products=[laptop]),  # out of stock: cancelled
        place_order(customer=customer, products=[mouse], quantity=3),  # confirmed, then cancelled
    ]
    for order in orders:
        wait_for_saga(order)
    order_ship(order=orders[1])
    order_deliver(order=orders[1])
    order_cancel(order=orders[4])
    wait_for_saga(orders[4], {"compensated"})
    wait_until(lambda: not Notification.objects.filter(status="queued").exists(), message="emails settled")

    trail = list(AuditEvent.objects.filter(order_id=orders[0].public_id).order_by("id").values_list("event", flat=True))
    assert trail[0] == "mark_reserved" and trail[-1] == "saga_completed"
    assert {"mark_reserved", "mark_paid", "mark_shipment_created", "confirm", "saga_completed"} <= set(trail)

    # The read model is updated just after each commit: wait for the last update to land.
    expected_statuses = {"confirmed": 1, "delivered": 1, "cancelled": 3}
    wait_until(lambda: dict(analytics.snapshot()["statuses"]) == expected_statuses, message="read model settled")
    incremental = analytics.snapshot()
    analytics.rebuild()
    assert analytics.snapshot() == incremental
    assert dict(incremental["statuses"]) == expected_statuses
    [(_, _, placed, confirmed, cancelled, revenue)] = incremental["days"]
    assert (placed, confirmed, cancelled, revenue) == (5, 2, 3, Decimal("130.00"))
    assert dict(incremental["failures"]) == {"process_payment": 1, "reserve_inventory": 1}

    figures = client_for(StaffFactory()).get("/api/v1/analytics/orders/").json()
    assert figures["status_breakdown"] == {"cancelled": 3, "confirmed": 1, "delivered": 1}
    assert figures["average_order_value"] == {"USD": "65.00"}
    assert [p["sku"] for p in figures["top_products"]] == ["MOUSE", "LAPTOP"]
    assert figures["failure_rate_by_step"]["process_payment"] == {"failures": 1, "rate": 0.2}
    assert_invariants()
