"""The back office with Django's test client: pages, actions and permissions."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from catalog.models import Reservation, StockLevel
from orders.models import Order, SagaRun
from orders.saga import events as saga_events
from shipping.models import Shipment
from tests.factories import ProductFactory, place_order, reserve_stock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    sent = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: sent.append(names))
    return sent


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def support_client(client, django_user_model):
    user = django_user_model.objects.create_user("sam", "sam@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    client.force_login(user)
    return client


def confirmed_order():
    order = place_order(products=[ProductFactory(on_hand=10)])
    reserve_stock(order)
    Shipment.objects.create(order=order, carrier="fake", tracking_number="FK1", idempotency_key=f"{order.pk}")
    Order.objects.filter(pk=order.pk).update(status="confirmed")
    SagaRun.objects.filter(order=order).update(status="completed")
    order.saga.steps.update(status="succeeded", attempts=1)
    return order


def failed_order():
    order = place_order()
    SagaRun.objects.filter(order=order).update(status="failed", error="process_payment was delivered 11 times")
    order.saga.steps.filter(name="reserve_inventory").update(status="succeeded")
    order.saga.steps.filter(name="process_payment").update(status="failed", error="crashed")
    Order.objects.filter(pk=order.pk).update(status="needs_attention")
    return order


def page(client, order):
    return client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()


def action_names(html):
    return sorted(part.split('"')[0] for part in html.split('data-action="')[1:])


def test_order_page_shows_saga_timeline_history_and_the_allowed_actions(admin_client):
    order = confirmed_order()
    html = page(admin_client, order)
    assert action_names(html) == ["cancel", "ship"]
    assert 'id="saga-timeline"' in html and "reserve_inventory" in html
    assert "FK1" in html and 'id="order-history"' in html

    assert action_names(page(admin_client, failed_order())) == ["compensate", "resolve", "retry"]


def test_support_sees_retry_and_cancel_but_not_ship(support_client):
    order = confirmed_order()
    assert action_names(page(support_client, order)) == ["cancel"]
    url = reverse("admin:orders_order_act", args=[order.pk, "ship"])
    assert support_client.post(url).status_code == 403
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert action_names(page(support_client, failed_order())) == ["compensate", "resolve", "retry"]


def test_support_cannot_edit_money_or_delete(support_client):
    order = confirmed_order()
    for name in (
        "payments_payment",
        "payments_refund",
        "shipping_shipment",
        "notifications_notification",
        "catalog_reservation",
        "audit_auditevent",
        "orders_failedsaga",
        "orders_order",
    ):
        assert support_client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    product = order.lines.first().product
    change = reverse("admin:catalog_product_change", args=[product.pk])
    assert support_client.get(change).status_code == 200  # view only
    support_client.post(change, {"sku": product.sku, "name": "x", "price": "0.01", "currency": "USD"})
    product.refresh_from_db()
    assert str(product.price) != "0.01"
    assert (
        support_client.post(reverse("admin:catalog_product_delete", args=[product.pk]), {"post": "yes"}).status_code
        == 403
    )


def test_cancel_asks_for_confirmation_then_compensates(admin_client, no_broker, django_capture_on_commit_callbacks):
    order = confirmed_order()
    url = reverse("admin:orders_order_act", args=[order.pk, "cancel"])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and b"Runs the compensations" in confirm.content
    order.refresh_from_db()
    assert order.status == "confirmed"  # nothing happened yet

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"note": "Customer called"}, follow=True)
    assert "cancelling" in response.content.decode()
    order.refresh_from_db()
    assert (order.status, order.cancel_reason) == ("compensating", "Customer called")
    assert no_broker[-1] == ["send_cancellation", "cancel_shipment", "refund_payment", "release_inventory"]
    event = AuditEvent.objects.get(object_type="orders.order", object_id=str(order.pk), event="start_compensation")
    assert (event.actor_type, event.actor_label) == ("staff", "root")


def test_ship_from_the_order_page(admin_client):
    order = confirmed_order()
    admin_client.post(reverse("admin:orders_order_act", args=[order.pk, "ship"]))
    order.refresh_from_db()
    assert order.status == "shipped"
    assert StockLevel.objects.get(product=order.lines.first().product).on_hand == 9


@pytest.mark.django_db(transaction=True)  # resolving asks the fake gateway and carrier: not inside a transaction
def test_failed_sagas_view_retry_and_resolve(admin_client, no_broker, django_capture_on_commit_callbacks):
    failing = failed_order()
    place_order()  # a healthy one is not listed
    changelist = reverse("admin:orders_failedsaga_changelist")
    html = admin_client.get(changelist).content.decode()
    assert str(failing.public_id) in html and "process_payment (forward)" in html
    assert html.count("/admin/orders/order/") == 2  # the sidebar, and the one failed order

    other = failed_order()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(changelist, {"action": "retry", "_selected_action": [failing.saga.pk]})
    failing.refresh_from_db()
    assert failing.status == "reserved" and no_broker[-1][0] == "process_payment"

    # Resolve needs a note: the first post shows the form, an empty note is refused.
    form = admin_client.post(changelist, {"action": "resolve", "_selected_action": [other.saga.pk]})
    assert b"What was done" in form.content
    admin_client.post(changelist, {"action": "resolve", "_selected_action": [other.saga.pk], "note": " "})
    other.refresh_from_db()
    assert other.status == "needs_attention"
    admin_client.post(
        changelist, {"action": "resolve", "_selected_action": [other.saga.pk], "note": "Refunded by phone"}
    )
    other.refresh_from_db()
    assert (other.status, other.saga.status) == ("cancelled", "resolved")
    resolved = AuditEvent.objects.get(event="saga_resolved")
    assert resolved.payload == {"note": "Refunded by phone"} and resolved.actor_label == "root"


def test_reservation_filters_and_release(admin_client):
    product = ProductFactory(on_hand=10)
    soon = reserve_stock(place_order(products=[product]))
    later = reserve_stock(place_order(products=[product]))
    Reservation.objects.filter(pk=soon.pk).update(expires_at=timezone.now() + timedelta(minutes=2))
    changelist = reverse("admin:catalog_reservation_changelist")
    html = admin_client.get(changelist, {"state": "expiring"}).content.decode()
    assert f">{soon.pk}<" in html and f">{later.pk}<" not in html

    admin_client.post(changelist, {"action": "release", "_selected_action": [soon.pk]})
    soon.refresh_from_db()
    assert soon.status == "active"  # its order is live: refused (see tests/orders/test_operator_paths.py)
    Order.objects.filter(pk=soon.order_id).update(status="cancelled")  # resolved by hand, stock left behind
    admin_client.post(changelist, {"action": "release", "_selected_action": [soon.pk]})
    soon.refresh_from_db()
    assert soon.status == "released"
    assert StockLevel.objects.get(product=product).reserved == 1


def test_dashboard_shows_statuses_chart_failures_and_attention(admin_client):
    confirmed_order()
    failed_order()
    from orders import analytics

    analytics.rebuild()
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="orders-per-status"' in html and "Needs attention" in html
    assert 'id="orders-per-hour"' in html and html.count("<rect") == 24
    assert "1 order needs attention" in html
    assert reverse("admin:orders_failedsaga_changelist") in html


@pytest.mark.parametrize("how", ["order id", "email", "sku", "tracking number", "nothing"])
def test_order_search_by_id_email_sku_or_tracking_number(admin_client, how, django_user_model):
    target = confirmed_order()
    other = confirmed_order()
    term = {
        "order id": str(target.public_id),
        "email": target.customer.email.upper(),
        "sku": target.lines.get().sku,
        "tracking number": "FK1",
        "nothing": "no-such-thing",
    }[how]
    Shipment.objects.filter(order=other).update(tracking_number="FK2")
    html = admin_client.get(reverse("admin:orders_order_changelist"), {"q": term}).content.decode()
    assert (str(target.public_id) in html) is (how != "nothing")
    assert str(other.public_id) not in html


def test_changelist_uses_a_bounded_number_of_queries(admin_client, django_assert_max_num_queries):
    for _ in range(5):
        confirmed_order()
    with django_assert_max_num_queries(8):
        assert admin_client.get(reverse("admin:orders_order_changelist")).status_code == 200
    order = confirmed_order()
    with django_assert_max_num_queries(20):
        assert admin_client.get(reverse("admin:orders_order_change", args=[order.pk])).status_code == 200
