"""An operator's internal note (Mark resolved) stays internal; the customer gets a customer-safe reason."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from notifications.models import Notification
from notifications.services import notification_send
from orders.models import RESOLVED_REASON, Order, SagaRun
from orders.saga import events as saga_events
from orders.saga.recovery import saga_resolve
from tests.api.conftest import client_for
from tests.factories import place_order

# Resolving asks the (fake) gateway and carrier, which refuse to be called inside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)

NOTE = "Refunded 29.99 by phone, ticket 4711, customer was rude to Sam"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch, settings):
    settings.EMAIL_BACKEND = "notifications.backends.FakeEmailBackend"
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: None)


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def failed_order():
    order = place_order()
    SagaRun.objects.filter(order=order).update(status="failed", error="refund_payment gave up after 5 attempts")
    Order.objects.filter(pk=order.pk).update(status="needs_attention", cancel_reason="Your payment was declined.")
    return order


def cancellation_email(order, mailoutbox):
    """Send the order's cancellation notice (queued by the ``cancelled`` transition) and return its text and html."""
    from notifications.tasks import notify_order

    notify_order(order.pk, "order_cancelled")  # queues it if the transition did not, then sends it
    notification = Notification.objects.get(order=order, template="order_cancelled")
    notification_send(notification_id=notification.pk)
    [message] = mailoutbox
    return message.body + message.alternatives[0].content


def test_a_resolve_note_reaches_the_audit_trail_and_the_admin_but_never_the_customer(admin_client, mailoutbox):
    order = failed_order()

    response = admin_client.post(reverse("admin:orders_order_act", args=[order.pk, "resolve"]), {"note": NOTE})

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.status, order.saga.status) == ("cancelled", "resolved")
    assert order.cancel_reason == RESOLVED_REASON
    # The customer: the API and the cancellation email carry the customer-safe reason only.
    detail = client_for(order.customer).get(f"/api/v1/orders/{order.public_id}/")
    assert detail.status_code == 200
    assert NOTE not in detail.content.decode()
    assert detail.json()["cancel_reason"] == RESOLVED_REASON
    email = cancellation_email(order, mailoutbox)
    assert NOTE not in email and RESOLVED_REASON in email
    # Staff: the audit event and the admin's order page.
    assert AuditEvent.objects.get(event="saga_resolved", order_id=order.public_id).payload == {"note": NOTE}
    page = admin_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert NOTE in page
    assert "Internal note (resolved by hand" in page


def test_resolving_from_the_failed_sagas_list_keeps_the_note_internal_too(admin_client, mailoutbox):
    order = failed_order()
    changelist = reverse("admin:orders_failedsaga_changelist")

    admin_client.post(changelist, {"action": "resolve", "_selected_action": [order.saga.pk], "note": NOTE})

    order.refresh_from_db()
    assert (order.status, order.cancel_reason) == ("cancelled", RESOLVED_REASON)
    assert NOTE not in cancellation_email(order, mailoutbox)


def test_resolve_requires_a_note_and_keeps_it_out_of_the_order():
    order = failed_order()

    assert saga_resolve(order.saga.pk, note="  Restocked 1 unit by hand  ") == "resolved"

    order.refresh_from_db()
    assert order.cancel_reason == RESOLVED_REASON
    assert "Restocked" not in order.cancel_reason
